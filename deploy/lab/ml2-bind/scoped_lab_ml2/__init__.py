"""Lab-only ML2 mechanism driver: bind every port on any host.

The lab runs the Neutron API server with ML2 but no L2 agent, OVS or OVN, so
no real mechanism driver could ever bind a port and Nova would fail to boot a
server on a network (``PortBindingFailed``).  This driver binds the first
segment offered with ``vif_type=ovs`` and marks the port ACTIVE.  Nova's fake
virt driver never plugs the VIF nor waits for ``network-vif-plugged``, so that
is all it needs.  Never use this outside a test lab.

Registered as ``scoped_lab_bind`` under ``neutron.ml2.mechanism_drivers``.
"""

from neutron_lib import constants
from neutron_lib.api.definitions import portbindings
from neutron_lib.plugins.ml2 import api


class BindAllMechanismDriver(api.MechanismDriver):
    """Binds any port on the first segment offered."""

    def initialize(self):
        pass

    def bind_port(self, context):
        for segment in context.segments_to_bind:
            context.set_binding(
                segment[api.ID],
                portbindings.VIF_TYPE_OVS,
                {portbindings.CAP_PORT_FILTER: False},
                status=constants.PORT_STATUS_ACTIVE,
            )
            return

    @property
    def connectivity(self):
        return portbindings.CONNECTIVITY_L2

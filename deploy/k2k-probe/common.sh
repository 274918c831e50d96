# Sourced by the probe scripts: site list and ports (127.0.0.1, 26000-26999 only).
# Site i: Apache+mellon (public Keystone URL) on 26<i>00, uwsgi Keystone (uwsgi protocol) on 26<i>01.
K2K_DIR=${K2K_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)}
SITES=${SITES:-"berlin denver paris"}
VENV=$K2K_DIR/venv
site_index() { local i=1; for s in $SITES; do [ "$s" = "$1" ] && { echo $i; return; }; i=$((i+1)); done; return 1; }
site_port()  { echo $((26000 + 100 * $(site_index $1))); }      # Apache (public)
site_uport() { echo $((26000 + 100 * $(site_index $1) + 1)); }  # uwsgi socket behind Apache
site_url()   { echo "http://127.0.0.1:$(site_port $1)"; }
idp_entity() { echo "$(site_url $1)/v3/OS-FEDERATION/saml2/idp"; }
sp_entity()  { echo "$(site_url $1)/v3/mellon/metadata"; }
site_dir()   { echo "$K2K_DIR/sites/$1"; }

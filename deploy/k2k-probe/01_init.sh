#!/bin/bash
# From scratch: for every site write keystone.conf + httpd.conf, create the sqlite DB, fernet/credential
# keys, bootstrap admin, the IdP SAML signing key/cert + IdP metadata, the mellon SP key/cert + SP
# metadata; then give every site the IdP metadata of all its peers. Sites are initialised in parallel.
set -euo pipefail
source "$(dirname "$0")/common.sh"
KM="nice -n 10 $VENV/bin/keystone-manage"

write_keystone_conf() {  # $1 = site
  local s=$1 d; d=$(site_dir $1)
  cat > $d/keystone.conf <<CONF
[DEFAULT]
log_file = $d/logs/keystone.log
debug = false

[database]
connection = sqlite:///$d/keystone.db

[token]
provider = fernet

[fernet_tokens]
key_repository = $d/fernet-keys

[fernet_receipts]
key_repository = $d/fernet-keys

[credential]
key_repository = $d/credential-keys

# --- this site as a Service Provider: federated auth via mod_auth_mellon
[auth]
methods = password,token,saml2,application_credential

[saml2]
# mellon puts the asserting IdP's entity id in MELLON_IDP (MellonIdP "IDP"); Keystone compares it
# with the remote ids of the IdP named in the URL .../identity_providers/<idp>/protocols/saml2/auth
remote_id_attribute = MELLON_IDP

# --- this site as an Identity Provider (K2K: issues SAML assertions for its users)
[saml]
certfile = $d/saml/cert.pem
keyfile = $d/saml/key.pem
idp_entity_id = $(idp_entity $s)
idp_sso_endpoint = $(site_url $s)/v3/OS-FEDERATION/saml2/sso
idp_metadata_path = $d/saml/idp_metadata.xml
xmlsec1_binary = /usr/bin/xmlsec1
# mellon refuses Keystone's default RelayState prefix "ss:mem:" ("Only http or https scheme allowed");
# this default applies to every service provider created afterwards (no PATCH needed)
relay_state_prefix = /v3/k2k-relay-
idp_organization_name = $s
idp_organization_display_name = Site $s
idp_organization_url = $(site_url $s)
idp_contact_company = $s
idp_contact_name = Ops
idp_contact_surname = $s
idp_contact_email = ops@$s.example
idp_contact_telephone = 555-0100
idp_contact_type = technical
CONF
}

write_sp_metadata() {  # mellon SP metadata incl. the PAOS (ECP) AssertionConsumerService
  local s=$1 d base cert; d=$(site_dir $1); base=$(site_url $s)/v3/mellon
  cert=$(grep -v '^-----' $d/mellon/sp.cert)
  cat > $d/mellon/sp-metadata.xml <<XML
<EntityDescriptor entityID="$(sp_entity $s)" xmlns="urn:oasis:names:tc:SAML:2.0:metadata" xmlns:ds="http://www.w3.org/2000/09/xmldsig#">
  <SPSSODescriptor protocolSupportEnumeration="urn:oasis:names:tc:SAML:2.0:protocol" AuthnRequestsSigned="true">
    <KeyDescriptor use="signing"><ds:KeyInfo><ds:X509Data><ds:X509Certificate>$cert</ds:X509Certificate></ds:X509Data></ds:KeyInfo></KeyDescriptor>
    <KeyDescriptor use="encryption"><ds:KeyInfo><ds:X509Data><ds:X509Certificate>$cert</ds:X509Certificate></ds:X509Data></ds:KeyInfo></KeyDescriptor>
    <SingleLogoutService Binding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect" Location="$base/logout"/>
    <AssertionConsumerService Binding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST" Location="$base/postResponse" index="0"/>
    <AssertionConsumerService Binding="urn:oasis:names:tc:SAML:2.0:bindings:PAOS" Location="$base/paosResponse" index="1"/>
  </SPSSODescriptor>
</EntityDescriptor>
XML
}

write_httpd_conf() {
  local s=$1 d; d=$(site_dir $1)
  cat > $d/apache/httpd.conf <<CONF
# Apache for site $s: public Keystone URL $(site_url $s); mod_auth_mellon protects the federated
# auth path; everything else is proxied to the site's uwsgi Keystone (127.0.0.1:$(site_uport $s)).
ServerRoot "$d/apache"
ServerName 127.0.0.1
Listen 127.0.0.1:$(site_port $s)
PidFile $d/apache/run/httpd.pid
DefaultRuntimeDir $d/apache/run
Mutex file:$d/apache/run default
User www-data
Group www-data
ErrorLog $d/apache/logs/error.log
LogLevel warn auth_mellon:info
LoadModule mpm_event_module /usr/lib/apache2/modules/mod_mpm_event.so
LoadModule authz_core_module /usr/lib/apache2/modules/mod_authz_core.so
LoadModule authn_core_module /usr/lib/apache2/modules/mod_authn_core.so
LoadModule authz_user_module /usr/lib/apache2/modules/mod_authz_user.so
LoadModule proxy_module /usr/lib/apache2/modules/mod_proxy.so
LoadModule proxy_uwsgi_module /usr/lib/apache2/modules/mod_proxy_uwsgi.so
LoadModule auth_mellon_module /usr/lib/apache2/modules/mod_auth_mellon.so
StartServers 1
ServerLimit 2
ThreadsPerChild 16
MaxRequestWorkers 32
LogFormat "%h %l %u %t \"%r\" %>s %b %D" timed
CustomLog $d/apache/logs/access.log timed
MellonCacheSize 100

<VirtualHost 127.0.0.1:$(site_port $s)>
  ProxyPass /v3/mellon !
  ProxyPass / uwsgi://127.0.0.1:$(site_uport $s)/ retry=0

  <Location /v3>
    MellonEnable "info"
    # all sites share the host 127.0.0.1 (cookies ignore ports): one cookie name per site
    MellonVariable "$s"
    MellonSPPrivateKeyFile $d/mellon/sp.key
    MellonSPCertFile $d/mellon/sp.cert
    MellonSPMetadataFile $d/mellon/sp-metadata.xml
    # one metadata file per peer IdP; adding a peer = drop a file here + graceful restart
    MellonIdPMetadataGlob $d/mellon/peers/*.xml
    MellonEndpointPath /v3/mellon
    MellonIdP "IDP"
    MellonSecureCookie Off
  </Location>

  # one block for all peer IdPs; Keystone checks that MELLON_IDP is a remote id of the IdP in the URL
  <LocationMatch "^/v3/OS-FEDERATION/identity_providers/[^/]+/protocols/saml2/auth\$">
    Require valid-user
    AuthType "Mellon"
    MellonEnable "auth"
  </LocationMatch>
</VirtualHost>
CONF
}

init_site() {
  local s=$1 d p; d=$(site_dir $s); p=$(site_port $s)
  rm -rf $d; mkdir -p $d/{fernet-keys,credential-keys,saml,logs,mellon/peers,apache/run,apache/logs}
  chmod 700 $d/fernet-keys $d/credential-keys
  write_keystone_conf $s
  local C="--config-file $d/keystone.conf"
  $KM $C db_sync
  $KM $C fernet_setup --keystone-user root --keystone-group root
  $KM $C credential_setup --keystone-user root --keystone-group root
  $KM $C bootstrap --bootstrap-password admin-$s --bootstrap-admin-url $(site_url $s)/v3 \
      --bootstrap-internal-url $(site_url $s)/v3 --bootstrap-public-url $(site_url $s)/v3 --bootstrap-region-id $s
  # IdP: SAML signing key/cert (xmlsec1 signs every assertion with it) + metadata the peers import
  openssl req -x509 -newkey rsa:2048 -nodes -days 365 -subj "/CN=keystone-$s-idp" \
    -keyout $d/saml/key.pem -out $d/saml/cert.pem 2>/dev/null
  $KM $C saml_idp_metadata > $d/saml/idp_metadata.xml
  # SP (mellon): its own key/cert + metadata
  openssl req -x509 -newkey rsa:2048 -nodes -days 365 -subj "/CN=keystone-$s-sp" \
    -keyout $d/mellon/sp.key -out $d/mellon/sp.cert 2>/dev/null
  write_sp_metadata $s
  write_httpd_conf $s
  echo "[$s] init done"
}

pids=""
for s in ${INIT_ONLY:-$SITES}; do init_site $s > $K2K_DIR/init-$s.log 2>&1 & pids="$pids $!"; done
rc=0; for p in $pids; do wait $p || rc=1; done
[ $rc = 0 ] || { tail -20 $K2K_DIR/init-*.log; exit 1; }
# every site trusts the IdP metadata (signing cert) of every peer (INIT_ONLY=new: existing sites get the
# newcomer's file too; their Apache must then re-read it: apache2 -k graceful, see 07_add_site.sh)
for s in $SITES; do
  for peer in $SITES; do [ $peer = $s ] && continue
    cp $(site_dir $peer)/saml/idp_metadata.xml $(site_dir $s)/mellon/peers/$peer.xml; done
  chown -R www-data:www-data $(site_dir $s)/mellon   # Apache children run as www-data
done
echo "init done: $SITES"

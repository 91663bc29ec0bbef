#!/bin/sh
# Install everything fsmount, its demo and its test suite need on a Debian machine (as root).
# Idempotent: safe to run again.  Usage: sh contrib/setup.sh
set -eu
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive

# Debian postinst scripts would start dovecot/vsftpd/innd/exim on their public ports; the tests
# start private instances instead, so keep the packaged services down.
if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
    chmod +x /usr/sbin/policy-rc.d
fi

need=""
python3 -m pip --version >/dev/null 2>&1 || need="python3-pip python3-dev gcc"
for p in fuse3 libfuse3-dev pkg-config attr rsync file vim openssl ca-certificates \
         util-linux-extra dovecot-imapd dovecot-pop3d vsftpd rclone isync inn2; do
    dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q "ok installed" || need="$need $p"
done
if [ -n "$need" ]; then
    apt-get update -qq
    # inn2's postinst fails on a host without a domain name; give it one and finish configuring.
    apt-get install -y -qq --no-install-recommends $need || {
        sed -i 's/^#* *domain:.*/domain: localdomain/' /etc/news/inn.conf
        dpkg --configure -a
    }
fi

pip_install() {
    python3 -m pip install -q "$@" 2>/dev/null || python3 -m pip install -q --break-system-packages "$@"
}
pip_install -e '.[test]'

# ProFTPD, a third real FTP server for the tests. Its package conflicts with vsftpd's (both
# provide ftp-server), so it is unpacked into a private root instead of installed, and only
# the libraries it links against are installed (named from the packages' own Depends, so
# Debian 13's renamed libraries, e.g. libssl3t64, are found too). tests/servers/proftpd.py
# looks for it there (or in $PROFTPD_ROOT).
PROFTPD_ROOT=${PROFTPD_ROOT:-/opt/fsmount-test/proftpd}
if [ ! -e "$PROFTPD_ROOT/.unpacked" ]; then
    apt-get update -qq
    tmp=$(mktemp -d)
    chown _apt "$tmp" 2>/dev/null || true  # apt downloads as _apt where it can
    # mod_tls is in proftpd-mod-crypto on Debian 12 and 13 (in proftpd-core before)
    pkgs=proftpd-core
    apt-cache show proftpd-mod-crypto >/dev/null 2>&1 && pkgs="$pkgs proftpd-mod-crypto"
    (cd "$tmp" && apt-get download -qq $pkgs)
    rm -rf "$PROFTPD_ROOT"
    mkdir -p "$PROFTPD_ROOT"
    libs=""
    for deb in "$tmp"/*.deb; do
        dpkg-deb -x "$deb" "$PROFTPD_ROOT"
        # "libssl3 (>= 3.0.0), liba | libb, adduser" -> the first choice of each library
        libs="$libs $(dpkg-deb -f "$deb" Depends | tr ',' '\n' | sed 's/|.*//; s/(.*)//; s/ //g' \
                     | grep '^lib' | grep -v '^libpam-runtime$' || true)"
    done
    # shellcheck disable=SC2086
    apt-get install -y -qq --no-install-recommends $libs
    rm -rf "$tmp"
    "$PROFTPD_ROOT/usr/sbin/proftpd" -v  # fails here, not in the tests, if a library is missing
    touch "$PROFTPD_ROOT/.unpacked"
fi

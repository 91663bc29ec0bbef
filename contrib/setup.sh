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
         dovecot-imapd dovecot-pop3d vsftpd rclone inn2; do
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

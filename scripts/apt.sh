# Package installation for the set-up scripts. Sourced after the script
# defines its own `say` and `die`.

apt_install() {  # apt_install PACKAGE...: install them quietly, without recommends
    command -v apt-get >/dev/null 2>&1 || die "$* missing and there is no apt-get to install them"
    say "installing $*"
    export DEBIAN_FRONTEND=noninteractive NEEDRESTART_SUSPEND=1
    apt-get update -qq >/dev/null || die "apt-get update failed"
    apt-get install -y -qq --no-install-recommends "$@" >/dev/null || die "apt-get install $* failed"
}

install_missing() {  # install_missing PACKAGE...: apt_install only what dpkg does not list
    local wanted=() package
    for package in "$@"; do dpkg -s "$package" >/dev/null 2>&1 || wanted+=("$package"); done
    [ "${#wanted[@]}" -eq 0 ] || apt_install "${wanted[@]}"
}

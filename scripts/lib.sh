# shellcheck shell=bash
# Shared helpers for the scripts in scripts/. Source it, don't run it:
#   source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# The caller sets `set -euo pipefail`; every helper fails with a message that
# says what to do.

# The repository's top directory (the parent of scripts/).
repo_root() {
    (cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
}

# Prints a step line.
say() {
    printf '==> %s\n' "$*"
}

# Prints an error and exits.
die() {
    printf '%s: %s\n' "$(basename "$0")" "$*" >&2
    exit 1
}

# Runs a command as root: directly when we are root, else through sudo.
as_root() {
    if [[ $(id -u) -eq 0 ]]; then "$@"; else sudo "$@"; fi
}

# Checks that we can act as root (installing packages, starting dockerd).
need_root_or_sudo() {
    [[ $(id -u) -eq 0 ]] && return 0
    command -v sudo >/dev/null ||
        die "this step needs root: run as root or install sudo"
    sudo -n true 2>/dev/null || say "sudo will ask for your password"
}

_apt_updated=
# Installs the Debian packages among PKG... that are not installed yet,
# running `apt-get update` once per script run before the first install.
ensure_apt_packages() {
    local missing=() pkg
    for pkg in "$@"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' ||
            missing+=("$pkg")
    done
    [[ ${#missing[@]} -eq 0 ]] && return 0
    command -v apt-get >/dev/null ||
        die "missing packages ${missing[*]} and no apt-get to install them: install them by hand"
    need_root_or_sudo
    if [[ -z $_apt_updated ]]; then
        say "refreshing the apt package lists"
        as_root apt-get update -q
        _apt_updated=1
    fi
    say "installing ${missing[*]}"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
}

# Prints the path of the program BIN from Debian's package PKG: the one on
# PATH if there is one, else one unpacked under target/tools/PKG from the
# package file (apt-get download, dpkg-deb -x): not installed, so no service
# of the package is set up or started on this host.
tool_from_deb() {
    local pkg=$1 bin=$2 dir tmp
    if command -v "$bin" >/dev/null; then
        command -v "$bin"
        return 0
    fi
    dir=$(repo_root)/target/tools/$pkg
    if [[ ! -x $dir/usr/bin/$bin ]]; then
        command -v apt-get >/dev/null ||
            die "$bin is missing and there is no apt-get to fetch Debian's $pkg: install $bin by hand"
        say "fetching $bin from Debian's $pkg package (unpacked under $dir, not installed)" >&2
        tmp=$(mktemp -d)
        chmod 755 "$tmp" # apt-get download fetches as the _apt user
        if ! (cd "$tmp" && apt-get download -q "$pkg" >&2); then
            need_root_or_sudo
            as_root apt-get update -q >&2
            (cd "$tmp" && apt-get download -q "$pkg" >&2) || die "could not download Debian's $pkg"
        fi
        mkdir -p "$dir"
        dpkg-deb -x "$tmp"/"$pkg"_*.deb "$dir"
        rm -rf "$tmp"
    fi
    echo "$dir/usr/bin/$bin"
}

# Makes sure a Docker engine answers `docker info`: installs Debian's docker.io
# when there is no docker command, and starts the daemon when none answers
# (systemd, then the init script, then dockerd in the background).
ensure_docker() {
    command -v docker >/dev/null || ensure_apt_packages docker.io
    docker info >/dev/null 2>&1 && return 0
    need_root_or_sudo
    as_root docker info >/dev/null 2>&1 &&
        die "Docker runs but $(id -un) may not use it: add yourself to the docker group or run as root"
    say "no Docker daemon answers; starting one"
    if command -v systemctl >/dev/null && [[ -d /run/systemd/system ]]; then
        as_root systemctl start docker || true
    fi
    if ! docker info >/dev/null 2>&1 && command -v service >/dev/null; then
        as_root service docker start >/dev/null 2>&1 || true
    fi
    if ! docker info >/dev/null 2>&1; then
        command -v dockerd >/dev/null || die "there is no dockerd to start: install docker.io"
        say "starting dockerd in the background (log: /var/log/dockerd.log)"
        as_root sh -c 'nohup dockerd >/var/log/dockerd.log 2>&1 &'
    fi
    local i
    for ((i = 0; i < 30; i++)); do
        docker info >/dev/null 2>&1 && return 0
        sleep 1
    done
    die "Docker did not answer within 30 s; see /var/log/dockerd.log or 'journalctl -u docker'"
}

# Makes sure the Rust workspace can build: the C libraries the hwlocality
# crate links against, a C compiler, and cargo itself.
ensure_build_deps() {
    ensure_apt_packages libhwloc-dev libudev-dev pkg-config gcc
    command -v cargo >/dev/null ||
        die "cargo is not installed: install Rust with rustup (https://rustup.rs), then open a new shell or run '. \$HOME/.cargo/env'"
}

# Makes sure `cargo deny` is there (the dependency policy in deny.toml):
# builds it from crates.io when missing, about 2.5 minutes on 2 cores.
ensure_cargo_deny() {
    cargo deny --version >/dev/null 2>&1 && return 0
    say "installing cargo-deny (cargo install cargo-deny --locked; a few minutes, once)"
    cargo install cargo-deny --locked
}

# Whether the ELF file $1 needs no dynamic loader.
is_static() {
    if command -v file >/dev/null; then
        file -bL "$1" | grep -Eq 'statically linked|static-pie linked'
    else
        ldd "$1" 2>&1 | grep -Eq 'not a dynamic executable|statically linked'
    fi
}

# `docker build --quiet ARGS...`, its output shown only when it fails: the
# Docker CLI writes a deprecation notice for the legacy builder on every
# build when buildx is missing, which is noise here.
build_image() {
    local out
    out=$(docker build --quiet "$@" 2>&1) || die "docker build $* failed:
$out"
}

# Copies every shared library the ELF file $1 links (as `ldd` lists them, the
# dynamic loader included) into the root file system $2, each at its own
# absolute path, following symlinks.
copy_libs() {
    local out path
    out=$(ldd "$1" 2>&1) || die "ldd $1 failed: $out"
    if grep -q 'not found' <<<"$out"; then
        die "$1 links libraries this host lacks:$(grep 'not found' <<<"$out" | tr -s ' \t\n' ' ')"
    fi
    # Lines are `name => /path (addr)`, `/path (addr)` or `linux-vdso.so.1 (addr)`.
    while read -r path; do
        mkdir -p "$2$(dirname "$path")"
        cp -L "$path" "$2$path"
    done < <(awk '{ for (i = 1; i <= NF; i++) if ($i ~ /^\//) print $i }' <<<"$out")
}

# Builds meshd (cargo, PROFILE debug or release) and a Docker image of it,
# FROM scratch (testnet/images/meshd.Dockerfile): the binary at /meshd, the
# shared libraries it links at their own paths, glibc's NSS modules for DNS.
# The same image serves the testnet (scripts/images) and real hosts
# (scripts/agent-image):
#   build_meshd_image PROFILE DOCKER-BUILD-ARG...   (--tag NAME, --label K=V, ...)
# Adds the label mesh.meshd.sha256 (the binary's digest, so scripts/testnet
# can tell a stale image from a current one), and checks that the image runs
# (`--help`) under its first --tag.
# MESHD_CARGO_ALSO (e.g. "-p meshctl --bin meshctl") builds more in the same
# cargo run: cargo unifies the features of one run, so a crate shared with
# meshd is compiled once, not once per feature set (mesh-testnet asks for
# tokio's test-util, meshd alone does not: built apart, tokio and all that
# depends on it were compiled twice).
build_meshd_image() {
    local profile=$1 flags=() also=() meshd rootfs libdir lib work tag= prev=
    shift
    read -r -a also <<<"${MESHD_CARGO_ALSO:-}"
    case $profile in
        debug) ;;
        release) flags=(--release) ;;
        *) die "the meshd profile is '$profile': use debug or release" ;;
    esac
    for arg in "$@"; do
        [[ -z $tag && $prev == --tag ]] && tag=$arg
        prev=$arg
    done
    [[ -n $tag ]] || die "build_meshd_image: no --tag given"
    say "building meshd ($profile)${also[*]:+, and in the same run: ${also[*]}}"
    cargo build --locked "${flags[@]}" -p mesh-agent --bin meshd "${also[@]}"
    meshd=target/$profile/meshd
    is_static "$meshd" && die "$meshd is static; this step expects the usual dynamic build"

    say "building $tag from $meshd and the shared libraries it links"
    work=$(mktemp -d)
    rootfs=$work/rootfs
    mkdir -p "$rootfs/etc"
    cp "$meshd" "$rootfs/meshd"
    copy_libs "$meshd" "$rootfs"
    # glibc loads its DNS resolver at run time (NSS), so ldd does not list it:
    # take libnss_dns, libnss_files and libresolv from beside the libc meshd links.
    libdir=$(dirname "$(ldd "$meshd" | awk '$1 ~ /^libc\.so/ { print $3 }')")
    for lib in libnss_dns.so.2 libnss_files.so.2 libresolv.so.2; do
        [[ -e $libdir/$lib ]] || die "$libdir/$lib is missing: install libc6"
        mkdir -p "$rootfs$libdir"
        cp -L "$libdir/$lib" "$rootfs$libdir/$lib"
        copy_libs "$libdir/$lib" "$rootfs"
    done
    printf 'hosts: files dns\n' >"$rootfs/etc/nsswitch.conf"
    cp testnet/images/meshd.Dockerfile "$work/Dockerfile"
    build_image --label "mesh.meshd.sha256=$(sha256sum "$meshd" | cut -d' ' -f1)" "$@" "$work"
    rm -rf "$work"
    docker run --rm "$tag" --help >/dev/null ||
        die "$tag does not run: see 'docker run --rm $tag --help'"
}

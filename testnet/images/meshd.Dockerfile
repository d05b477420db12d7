# meshd:testnet — the agent for the testnet (mesh-testnet), and ganger/meshd for
# real hosts (scripts/agent-image), FROM scratch. meshd
# is dynamically linked (hwloc needs libudev, which Debian ships only as a
# shared library), so build_meshd_image (scripts/lib.sh) puts in rootfs/ the binary at /meshd, every
# shared library `ldd` lists at the same absolute path (the loader
# /lib64/ld-linux-x86-64.so.2 included), glibc's NSS modules for DNS and an
# /etc/nsswitch.conf saying `hosts: files dns`.
FROM scratch
COPY rootfs/ /
ENTRYPOINT ["/meshd"]
CMD ["--help"]

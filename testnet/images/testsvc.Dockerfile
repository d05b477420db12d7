# mesh-testsvc:latest — the std-only test service, linked fully static, alone
# in an empty image. Built by scripts/images from a context holding only this
# file and the binary; run `mesh-testsvc --help` for the modes.
FROM scratch
COPY mesh-testsvc /mesh-testsvc
ENTRYPOINT ["/mesh-testsvc"]
CMD ["sleep", "1"]

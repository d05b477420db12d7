# mesh-busybox:latest — Debian's static busybox and a few applet links, for
# tests that need a shell. Built by scripts/images from a context holding this
# file and bin/ (busybox plus relative symlinks to it).
FROM scratch
COPY bin/ /bin/
ENV PATH=/bin
CMD ["sh"]

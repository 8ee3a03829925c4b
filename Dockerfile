# The controller image, from scratch: the binary, the glibc/libgcc files it links (as a
# distroless "cc" image holds them), CA certificates and a nonroot user (65532, which
# deploy/deployment.yaml and the Helm chart also set). No shell, no package manager.
#
# The build context is the root filesystem that scripts/image.sh assembles in target/image/
# (it builds the binary with cargo and copies what `ldd` names), so no base image has to be
# pulled from a registry:
#
#   scripts/image.sh                    # buildah (no daemon needed) or docker, whichever is there
#   docker build -t pulsar-autoscaler:0.1.0 -f Dockerfile target/image
FROM scratch
COPY rootfs/ /
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/pulsar-autoscaler"]
CMD ["run", "--leader-election"]

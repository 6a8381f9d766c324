# demarc-relay: TURN server with the eBPF dwell-time probe.
#
#   docker build -t demarc-relay .
#   docker run --network host \
#     --cap-add BPF --cap-add NET_ADMIN --cap-add PERFMON \
#     -v /etc/turnserver.conf:/etc/turnserver.conf:ro demarc-relay
#
# Host networking: a TURN server hands out relay ports from a range, and the
# probe attaches to the host's interfaces; neither works behind Docker's NAT.

FROM rust:1.95-slim-bookworm AS build
# clang/llvm/libbpf-dev: the probe's BPF programs are C, compiled by build.rs.
RUN apt-get update \
 && apt-get install -y --no-install-recommends clang llvm libbpf-dev pkg-config \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p demarc-relay \
 && install -D target/release/demarc-relay /out/demarc-relay

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates libcap2-bin \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin demarc
COPY --from=build /out/demarc-relay /usr/local/bin/demarc-relay
# Permitted, not effective: the binary starts even where the container lacks
# the capabilities, and the probe raises them when it attaches.
RUN setcap cap_bpf,cap_net_admin,cap_perfmon+p /usr/local/bin/demarc-relay \
 && apt-get purge -y libcap2-bin && apt-get autoremove -y
USER 10001:10001
EXPOSE 3478/udp 3478/tcp 5349/tcp 9641/tcp
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/demarc-relay"]
CMD ["-c", "/etc/turnserver.conf"]

# The usual online build of grapevine's managed-plugin rootfs.
#
# NOT runnable on the project's build machines (no image registry is reachable there);
# use `make plugin` (scripts/build-plugin.sh), which builds the same rootfs offline.
# Where a registry is reachable:
#
#   docker build -t grapevine-rootfs .
#   id=$(docker create grapevine-rootfs true)
#   mkdir -p build/plugin/rootfs && docker export "$id" | tar -x -C build/plugin/rootfs
#   docker rm "$id" && cp config.json build/plugin/
#   docker plugin create grapevine:latest build/plugin

FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -o /out/grapevine .

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends iptables \
 && rm -rf /var/lib/apt/lists/* \
 && mkdir -p /run/docker/plugins /var/lib/grapevine
COPY --from=build /out/grapevine /grapevine
ENTRYPOINT ["/grapevine", "serve"]

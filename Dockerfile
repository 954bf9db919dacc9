# The server as a static binary on a distroless base: no shell, no package manager, a non-root
# user. Build with `docker build -t streamspace-realtime .`; deploy/kubernetes runs it.

FROM golang:1.26-bookworm AS build
WORKDIR /src
# Modules first, so that a source change does not download them again.
COPY go.mod go.sum ./
RUN go mod download
COPY . .
# A static binary (modernc.org/sqlite is pure Go, so it needs no libc and runs on a static
# base) with Kubernetes as a session source (-tags kubernetes), built by the script that
# scripts/test.sh also runs, so the tests check this very build.
RUN bash scripts/build-static.sh /out/streamspace-realtime

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/streamspace-realtime /streamspace-realtime
# The home of the nonroot user is writable, so `serve --dev` can create its SQLite file there.
WORKDIR /home/nonroot
USER 65532:65532
# 8080: HTTP (browsers, agents, services); 8090: the peer link between replicas.
EXPOSE 8080 8090
ENTRYPOINT ["/streamspace-realtime"]
CMD ["serve"]

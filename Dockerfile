# The three programs' images, built from the repository root:
#   docker build --target user-service  -t shippy-user-service .
#   docker build --target email-service -t shippy-email-service .
#   docker build --target user-cli      -t shippy-user-cli .
# (docker-compose.yml builds them so.) One build stage compiles all three:
# they share most of their packages, and the stage is built once and then
# cached for the other two images.
FROM golang:1.27-bookworm AS build
# The module proxy to download from (the go command's default when empty).
ARG GOPROXY
ENV GOTOOLCHAIN=auto CGO_ENABLED=0
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY internal/ internal/
COPY proto/ proto/
COPY shippy-user-service/ shippy-user-service/
COPY shippy-email-service/ shippy-email-service/
COPY shippy-user-cli/ shippy-user-cli/
# The build cache is dropped: it would only make this layer 1 GB bigger.
RUN go build -trimpath -ldflags="-s -w" -o /out/ ./shippy-user-service ./shippy-email-service ./shippy-user-cli \
 && go clean -cache

# Each final stage: no shell, no package manager, runs as uid 65532; the
# binary is its own health check (`<binary> healthcheck`).
FROM gcr.io/distroless/static-debian12:nonroot AS user-service
COPY --from=build /out/shippy-user-service /shippy-user-service
USER nonroot
# Writable by nonroot: the embedded SQLite file lands here when no database
# server is configured.
WORKDIR /home/nonroot
ENTRYPOINT ["/shippy-user-service"]

FROM gcr.io/distroless/static-debian12:nonroot AS email-service
COPY --from=build /out/shippy-email-service /shippy-email-service
USER nonroot
ENTRYPOINT ["/shippy-email-service"]

# Run: docker run --rm -e MICRO_REGISTRY=nats -e MICRO_REGISTRY_ADDRESS=nats://nats:4222 IMAGE list
FROM gcr.io/distroless/static-debian12:nonroot AS user-cli
COPY --from=build /out/shippy-user-cli /shippy-user-cli
USER nonroot
ENTRYPOINT ["/shippy-user-cli"]
CMD ["--help"]

# Azurite (the Blob emulator of the compose `local` profile) where its registry image
# (mcr.microsoft.com/azure-storage/azurite) cannot be pulled: Debian's Node.js plus the
# azurite npm package that scripts/install_azurite.sh put in .tools/azurite.
ARG BASE=tritonkit-base:bookworm
FROM ${BASE}
RUN apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nodejs \
    && rm -rf /var/lib/apt/lists/*
COPY node_modules /opt/azurite/node_modules
RUN ln -s /opt/azurite/node_modules/.bin/azurite-blob /usr/local/bin/azurite-blob \
    && useradd --uid 1002 azurite && mkdir /data && chown azurite /data
USER azurite
ENTRYPOINT ["tini", "--"]
CMD ["azurite-blob", "--blobHost", "0.0.0.0", "--location", "/data"]

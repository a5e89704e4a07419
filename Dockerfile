# One image for the three apps (API, worker, dashboard). They run from source through tsx:
# there is no build step. Pick the app with the command, e.g. `npm start -w apps/worker`.
FROM node:20-bookworm-slim

WORKDIR /app

# Dev dependencies included: tsx (a root devDependency) is what runs the apps.
COPY . .
RUN npm ci --no-audit --no-fund && npm cache clean --force

# Uploads and exports; a named volume mounted here starts out owned by `node`.
RUN mkdir -p /data/blobs && chown node:node /data/blobs
ENV BLOB_DIR=/data/blobs

# npm runs scripts with `sh -c`, and Debian's dash neither execs the command nor passes SIGTERM
# on: the app would be orphaned and killed, never drained. bash execs a lone command, so npm's
# SIGTERM reaches node and the worker checkpoints its chunk before exiting.
ENV npm_config_script_shell=/bin/bash

USER node
EXPOSE 3000 3001 3002
CMD ["npm", "start", "-w", "apps/api"]

# One ordo node. Build: docker build -t ordo .
# Run:   docker run -p 6379:6379 -v ordo-data:/data ordo [options]
FROM node:20-bookworm-slim AS build
WORKDIR /app
COPY package.json package-lock.json tsconfig.json ./
COPY src ./src
COPY test ./test
COPY bench ./bench
COPY sim ./sim
COPY chaos ./chaos
COPY testkit ./testkit
RUN npm ci --no-audit --no-fund && npm prune --omit=dev

FROM node:20-bookworm-slim
WORKDIR /app
ENV NODE_ENV=production
COPY --from=build /app/package.json ./
COPY --from=build /app/node_modules ./node_modules
COPY --from=build /app/dist ./dist
VOLUME /data
EXPOSE 6379
# Inside the container the node listens on every interface; publish the port to choose who reaches it.
ENTRYPOINT ["node", "dist/src/cli.js", "--host", "0.0.0.0", "--port", "6379", "--data", "/data"]
CMD []

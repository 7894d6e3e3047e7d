// Apollo Gateway (IntrospectAndCompose) in front of the benchmark subgraphs,
// the reference system of scripts/bench.sh.
//
// GATEWAY_SUBGRAPHS: name=url,... as the bench-subgraphs binary prints it.
// PORT: where to listen on 127.0.0.1.
// Prints "apollo-gateway ready at <url>" once the supergraph is composed.
//
// `node server.mjs --print-supergraph` composes the same subgraphs, prints
// the supergraph SDL and exits: the other routers of the benchmark serve
// that file, so every system runs the same composition.
import { ApolloGateway, IntrospectAndCompose, RemoteGraphQLDataSource } from '@apollo/gateway';
import { ApolloServer } from '@apollo/server';
import { startStandaloneServer } from '@apollo/server/standalone';
import { ApolloServerPluginLandingPageDisabled } from '@apollo/server/plugin/disabled';

function subgraphList(raw) {
  if (!raw) {
    throw new Error('GATEWAY_SUBGRAPHS (name=url,...) is not set');
  }
  return raw
    .split(',')
    .map((item) => item.trim())
    .filter((item) => item.length > 0)
    .map((item) => {
      const at = item.indexOf('=');
      if (at <= 0 || at === item.length - 1) {
        throw new Error(`\`${item}\` is not name=url`);
      }
      return { name: item.slice(0, at), url: item.slice(at + 1) };
    });
}

const subgraphs = subgraphList(process.env.GATEWAY_SUBGRAPHS);

if (process.argv.includes('--print-supergraph')) {
  const { supergraphSdl, cleanup } = await new IntrospectAndCompose({ subgraphs }).initialize({
    update() {},
    async healthCheck() {},
    getDataSource: ({ url }) => new RemoteGraphQLDataSource({ url }),
  });
  process.stdout.write(supergraphSdl);
  await cleanup();
  process.exit(0);
}

const port = Number.parseInt(process.env.PORT ?? '', 10);
if (!Number.isInteger(port) || port <= 0) {
  throw new Error('PORT is not set to a port number');
}

const gateway = new ApolloGateway({
  supergraphSdl: new IntrospectAndCompose({ subgraphs }),
});

const server = new ApolloServer({
  gateway,
  plugins: [ApolloServerPluginLandingPageDisabled()],
});

const { url } = await startStandaloneServer(server, {
  listen: { host: '127.0.0.1', port },
});
console.log(`apollo-gateway ready at ${url}`);

async function stop() {
  await server.stop();
  process.exit(0);
}
process.on('SIGTERM', stop);
process.on('SIGINT', stop);

// `npm run cluster`: a local 3-node ordo cluster in the foreground, on
// 127.0.0.1:7001-7003 (bus ports 17001-17003), data under ./data/cluster/<port>.
// The same command restarts it on the data it left. Ctrl-C stops all three
// gracefully (a second Ctrl-C kills them). A node that dies is reported; the
// other two keep serving while they are a majority. The nodes are started
// and watched through launcher/ (the testkit starts its clusters there too).

import { resolve } from 'node:path';
import { ALL_CHILDREN } from './launcher/children.js';
import { LocalCluster, type ClusterNode } from './launcher/cluster.js';

const PORTS: readonly number[] = [7001, 7002, 7003];
const DATA_PARENT = resolve('data', 'cluster');

const IOREDIS_SNIPPET = `import { Cluster } from 'ioredis';
    const cluster = new Cluster([${PORTS.map((p) => `{ host: '127.0.0.1', port: ${p} }`).join(', ')}]);
    console.log(await cluster.incr('order:id'));`;

function say(line: string): void {
  process.stdout.write(`${line}\n`);
}

async function main(): Promise<number> {
  const cluster = LocalCluster.create({
    ports: PORTS,
    dataDirs: PORTS.map((p) => resolve(DATA_PARENT, String(p))),
    ownProcessGroups: true,
  });
  let stopping = false;
  let up = false;
  for (const node of cluster.nodes) {
    node.onOutputLine = (n: ClusterNode, line: string) => say(`[${n.port}] ${line}`);
    node.onUnexpectedExit = (n: ClusterNode, how: string) => {
      if (stopping || !up) return;
      const alive = cluster.running.length;
      say(
        `\n!! node ${n.port} died (${how}). ${alive} of ${cluster.nodes.length} still running` +
          `${alive * 2 > cluster.nodes.length ? ': they keep serving as a majority' : ': no majority, writes will wait and time out'}.\n` +
          `!! restart it in another terminal with: ${n.commandLine(['--data', n.dataDir])}\n`,
      );
      if (alive === 0) {
        say('every node has exited; stopping.');
        process.exit(1);
      }
    };
  }

  const stopAll = async (signal: NodeJS.Signals): Promise<void> => {
    if (stopping) {
      say(`${signal} again: killing the nodes now`);
      ALL_CHILDREN.killNow();
      process.exit(130);
    }
    stopping = true;
    say(`\n${signal}: stopping the ${cluster.running.length} running nodes gracefully (again to kill them)`);
    const running = cluster.running;
    const how = await Promise.all(running.map((n) => n.stop()));
    say(`stopped: ${running.map((n, i) => `node ${n.port} ${how[i] ?? '?'}`).join(', ')}`);
    process.exit(how.every((h) => h === 'exit code 0') ? 0 : 1);
  };
  process.on('SIGINT', (s) => void stopAll(s));
  process.on('SIGTERM', (s) => void stopAll(s));

  say(`starting 3 ordo nodes, data under ${DATA_PARENT}:`);
  for (const line of cluster.commandLines()) say(`  ${line}`);
  try {
    await Promise.all(cluster.nodes.map((n) => n.start()));
  } catch (e) {
    say(`could not start the cluster: ${(e as Error).message}`);
    stopping = true;
    await cluster.stopAll();
    return 1;
  }
  up = true;
  try {
    const state = await cluster.waitForLeaders();
    say('\nevery group has a leader:');
    for (const g of state.groups) say(`  group ${g.group}, slots ${g.start}-${g.end}: leader on port ${g.leader.port}`);
  } catch (e) {
    say(`\nthe nodes are up, but not every group accepts writes yet (${(e as Error).message}); requests wait for the election`);
  }
  say(`
ordo cluster on ${PORTS.map((p) => `127.0.0.1:${p}`).join(', ')} is running. Connect with:

  redis-cli -p 7001          any node answers any key (forwarded to the group's leader)
  redis-cli -c -p 7001       cluster mode: follows MOVED redirections to the group leaders
  redis-cli -p 7001 CLUSTER SLOTS        who leads which slots
  redis-cli -p 7001 INFO raft            each group's role, term, leader, commit and applied index

  ioredis:
    ${IOREDIS_SNIPPET}

Ctrl-C stops all three. Starting again with npm run cluster reuses the data.
`);
  return new Promise<number>(() => undefined);
}

main().then(
  (code) => process.exit(code),
  (e: unknown) => {
    process.stderr.write(`cluster: fatal: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
    ALL_CHILDREN.killNow();
    process.exit(1);
  },
);

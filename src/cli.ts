#!/usr/bin/env node
// `ordo`: start one node. Exit codes: 0 after a graceful stop, 1 when the node
// cannot start (bad flag, unusable data directory, port taken).

import { ConfigError, HELP, parseCommandLine } from './config.js';
import { OrdoServer } from './server/server.js';
import { DataDirectoryError } from './storage/store.js';
import { VERSION } from './version.js';

async function main(): Promise<number> {
  let parsed;
  try {
    parsed = parseCommandLine(process.argv.slice(2));
  } catch (e) {
    if (e instanceof ConfigError) {
      process.stderr.write(`ordo: ${e.message}\nRun "ordo --help" for the options.\n`);
      return 1;
    }
    throw e;
  }
  if (parsed.kind === 'help') {
    process.stdout.write(HELP);
    return 0;
  }
  if (parsed.kind === 'version') {
    process.stdout.write(`ordo ${VERSION}\n`);
    return 0;
  }
  const { config } = parsed;
  // Signals are taken from the start: one that arrives while the node starts
  // (it may already listen) stops it gracefully once it is up; a second one
  // exits at once (a start can wait for cluster peers).
  let stopSignal: NodeJS.Signals | null = null;
  let wake: (() => void) | null = null;
  let started = false;
  const onSignal = (signal: NodeJS.Signals): void => {
    if (stopSignal !== null) {
      if (!started) process.exit(1);
      return;
    }
    stopSignal = signal;
    if (!started) process.stdout.write(`ordo: ${signal} while starting; stopping once started (again to exit at once)\n`);
    wake?.();
  };
  process.on('SIGTERM', onSignal);
  process.on('SIGINT', onSignal);
  let server: OrdoServer;
  try {
    server = await OrdoServer.start(config);
  } catch (e) {
    if (e instanceof DataDirectoryError) {
      process.stderr.write(`ordo: ${e.message}\n`);
      return 1;
    }
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'EADDRINUSE' || code === 'EACCES' || code === 'EADDRNOTAVAIL') {
      process.stderr.write(`ordo: cannot listen on ${config.host}:${config.port}: ${(e as Error).message}\n`);
      return 1;
    }
    throw e;
  }
  const fsyncNote = config.fsync === 'never' ? ' (fsync never: acknowledged writes are NOT durable)' : '';
  process.stdout.write(`ordo ${VERSION} ready on ${config.host}:${server.port}, data in ${config.dataDir}${fsyncNote}\n`);
  started = true;
  if (stopSignal === null) await new Promise<void>((resolve) => (wake = resolve));
  process.stdout.write(`ordo: ${stopSignal ?? 'signal'}, finishing in-flight writes and stopping\n`);
  await server.stop();
  process.stdout.write('ordo: stopped\n');
  return 0;
}

main().then(
  (code) => process.exit(code),
  (e: unknown) => {
    process.stderr.write(`ordo: fatal: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
    process.exit(1);
  },
);

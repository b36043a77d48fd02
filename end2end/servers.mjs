// Starting and stopping real gpulab servers, for the tests that need servers of their own
// and for scripts (fleet-screenshots.mjs) that run without node:test.

import { spawn } from 'node:child_process';
import { createServer } from 'node:net';

// The gpulab binary and the built UI, as `cargo xtask test` passes them.
export const GPULAB_BIN = process.env.GPULAB_BIN;
export const GPULAB_STATIC_DIR = process.env.GPULAB_STATIC_DIR;

// Starts `gpulab serve` on `port`, resolving once it listens; the process is returned. `env`
// adds to the environment, such as GPULAB_TOKEN, and `args` to the command line.
export async function startServer(port, dataDir, env = {}, args = []) {
  const child = spawn(
    GPULAB_BIN,
    ['serve', '--addr', `127.0.0.1:${port}`, '--static-dir', GPULAB_STATIC_DIR, '--data-dir', dataDir, ...args],
    { stdio: ['ignore', 'pipe', 'inherit'], env: { ...process.env, ...env } },
  );
  await new Promise((resolve, reject) => {
    let out = '';
    child.stdout.on('data', (chunk) => {
      out += chunk;
      if (out.includes('gpulab listening on ')) resolve();
    });
    child.on('exit', (code, signal) => reject(new Error(`gpulab exited (${code ?? signal}) before listening:\n${out}`)));
  });
  return child;
}

// A TCP port that was free a moment ago.
export function freePort() {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

// Stops `child` with `signal` and waits until it has exited.
export function killed(child, signal) {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  const exited = new Promise((resolve) => child.once('exit', resolve));
  child.kill(signal);
  return exited;
}

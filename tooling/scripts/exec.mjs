// Process helpers shared by the repo scripts. Plain Node, no dependencies: these run before install.
import { spawnSync } from 'node:child_process';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

export const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), '../..');

// turbo starts each package's script with the `pnpm` it finds on PATH, and package scripts run
// with node_modules/.bin on PATH; bootstrap.mjs puts corepack's pnpm shim there.
export const binDir = join(repoRoot, 'node_modules', '.bin');

// corepack refuses pnpm's current signing keys on this project's machines; the pinned version
// in package.json's packageManager field is what corepack fetches.
export const toolEnv = {
  ...process.env,
  COREPACK_INTEGRITY_KEYS: '0',
  COREPACK_ENABLE_DOWNLOAD_PROMPT: '0',
  COREPACK_ENABLE_AUTO_PIN: '0',
  TURBO_TELEMETRY_DISABLED: '1',
  TURBO_NO_UPDATE_NOTIFIER: '1',
  DO_NOT_TRACK: '1',
};

/** Runs a command with inherited stdio; exits this process with the child's code if it fails. */
export function exec(command, args, options = {}) {
  const result = spawnSync(command, args, {
    cwd: repoRoot,
    env: toolEnv,
    stdio: 'inherit',
    // corepack and npm are .cmd shims on Windows, which only a shell can start.
    shell: process.platform === 'win32',
    ...options,
  });
  if (result.error) {
    console.error(`[tessera] could not start ${command}: ${result.error.message}`);
    process.exit(1);
  }
  if (result.status !== 0) {
    const why = result.signal ? `signal ${result.signal}` : `exit code ${result.status}`;
    console.error(`[tessera] ${[command, ...args].join(' ')} failed (${why})`);
    process.exit(result.status ?? 1);
  }
}

/** Runs pnpm (the version pinned in package.json) through corepack. */
export function pnpm(args, options) {
  exec('corepack', ['pnpm', ...args], options);
}

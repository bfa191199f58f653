// Process helpers shared by the repo scripts. Plain Node, no dependencies: these run before install.
import { spawnSync } from 'node:child_process';
import { delimiter, dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

export const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), '../..');

// turbo starts package scripts with the `pnpm` it finds on PATH. Corepack's shims for it live
// here (bootstrap.mjs makes them), not in node_modules/.bin: `pnpm run` puts the relative
// './node_modules/.bin' on PATH, and turbo would then spawn that relative path from each
// package's folder, where it does not exist.
export const shimDir = join(repoRoot, 'node_modules', '.corepack-shims');

export const toolEnv = {
  ...process.env,
  PATH: [shimDir, process.env.PATH].filter(Boolean).join(delimiter),
  // corepack rejects pnpm's signing keys on this project's machines; the version it fetches is
  // the one pinned by package.json's packageManager field.
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

// Makes a checkout ready to run: installs dependencies when they are missing or stale, then
// builds every package through turbo. Needs only Node 20+ (with its bundled corepack).
import { existsSync, mkdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { exec, pnpm, repoRoot, shimDir } from './exec.mjs';

function installIsStale() {
  const marker = join(repoRoot, 'node_modules', '.modules.yaml');
  const lockfile = join(repoRoot, 'pnpm-lock.yaml');
  if (!existsSync(marker)) return true;
  return existsSync(lockfile) && statSync(lockfile).mtimeMs > statSync(marker).mtimeMs;
}

/** Installs dependencies if needed and puts a `pnpm` shim where turbo finds it. */
export function install() {
  if (installIsStale()) {
    console.log('[tessera] installing dependencies (corepack pnpm install --frozen-lockfile)');
    pnpm(['install', '--frozen-lockfile']);
  }
  if (!existsSync(join(shimDir, 'pnpm'))) {
    mkdirSync(shimDir, { recursive: true });
    exec('corepack', ['enable', '--install-directory', shimDir, 'pnpm']);
  }
}

/** Runs turbo from the workspace with the environment the repo scripts use. */
export function turbo(args) {
  pnpm(['exec', 'turbo', ...args]);
}

export function bootstrap() {
  install();
  console.log('[tessera] building packages (turbo run build)');
  turbo(['run', 'build', '--output-logs=errors-only']);
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  bootstrap();
}

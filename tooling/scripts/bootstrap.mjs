// Makes a checkout ready to run: installs dependencies when they are missing or stale, then
// builds every package through turbo. Needs only Node 20+ (with its bundled corepack).
import { existsSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { binDir, exec, pnpm, repoRoot } from './exec.mjs';

function installIsStale() {
  const marker = join(repoRoot, 'node_modules', '.modules.yaml');
  const lockfile = join(repoRoot, 'pnpm-lock.yaml');
  if (!existsSync(marker)) return true;
  return existsSync(lockfile) && statSync(lockfile).mtimeMs > statSync(marker).mtimeMs;
}

export function bootstrap() {
  if (installIsStale()) {
    console.log('[tessera] installing dependencies (corepack pnpm install --frozen-lockfile)');
    pnpm(['install', '--frozen-lockfile']);
  }
  if (!existsSync(join(binDir, 'pnpm'))) {
    exec('corepack', ['enable', '--install-directory', binDir, 'pnpm']);
  }
  console.log('[tessera] building packages (turbo run build)');
  pnpm(['exec', 'turbo', 'run', 'build', '--output-logs=errors-only']);
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  bootstrap();
}

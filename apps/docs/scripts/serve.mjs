// Serves the built site (`pnpm --filter @tessera/docs serve [port]`); build it first.
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { serveStatic } from './static-server.mjs';

const dist = join(dirname(fileURLToPath(import.meta.url)), '..', 'site', '.vitepress', 'dist');
if (!existsSync(join(dist, 'index.html'))) {
  console.error(
    'docs: no built site in site/.vitepress/dist; run `pnpm --filter @tessera/docs build` first',
  );
  process.exit(1);
}
const port = Number(process.argv[2] ?? 4173);
const { url } = await serveStatic(dist, port);
console.log(`docs: serving ${dist} at ${url} (Ctrl-C stops)`);

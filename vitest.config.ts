// One Vitest run over the whole workspace. Every workspace folder with a `test/` directory is a
// project named after its package; `source` resolves @tessera/* imports to their TypeScript, so
// tests never need a prior build.
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { defaultClientConditions, defaultServerConditions } from 'vite';
import { defineConfig } from 'vitest/config';

const root = import.meta.dirname;
const workspaceGroups = ['packages', 'apps', 'tooling'];

function projectDirs(): string[] {
  return workspaceGroups.flatMap((group) => {
    const groupDir = join(root, group);
    if (!existsSync(groupDir)) return [];
    return readdirSync(groupDir, { withFileTypes: true })
      .filter((entry) => entry.isDirectory())
      .map((entry) => join(groupDir, entry.name))
      .filter((dir) => existsSync(join(dir, 'test')));
  });
}

function projectName(dir: string): string {
  const manifest = join(dir, 'package.json');
  if (existsSync(manifest)) return JSON.parse(readFileSync(manifest, 'utf8')).name;
  return dir.slice(root.length + 1);
}

export default defineConfig({
  // Node-environment tests resolve through the ssr conditions; browser-mode ones through resolve.
  resolve: { conditions: ['source', ...defaultClientConditions] },
  ssr: { resolve: { conditions: ['source', ...defaultServerConditions] } },
  test: {
    testTimeout: 30_000,
    hookTimeout: 30_000,
    passWithNoTests: false,
    projects: projectDirs().map((dir) => ({
      extends: true,
      test: {
        name: projectName(dir),
        root: resolve(dir),
        include: ['test/**/*.test.ts'],
      },
    })),
  },
});

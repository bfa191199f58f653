import { existsSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { defaultClientConditions, defaultServerConditions } from 'vite';
import { type DefaultTheme, defineConfig } from 'vitepress';

const here = (path: string) => fileURLToPath(new URL(path, import.meta.url));

// The API sidebar is written by TypeDoc (scripts/build.mjs); a dev server started without it still works.
function apiSidebar(): DefaultTheme.SidebarItem[] {
  const file = here('./generated/api-sidebar.json');
  if (!existsSync(file)) return [{ text: 'Overview', link: '/api/' }];
  const items = JSON.parse(readFileSync(file, 'utf8')) as DefaultTheme.SidebarItem[];
  return [{ text: 'Overview', link: '/api/' }, ...items];
}

const guide: DefaultTheme.SidebarItem[] = [
  {
    text: 'Guide',
    items: [
      { text: 'Getting started', link: '/guide/getting-started' },
      { text: 'Write your own attention variant', link: '/guide/custom-variant' },
      { text: 'Train a learnable bias', link: '/guide/learnable-bias' },
      { text: 'CUDA setup', link: '/guide/cuda' },
    ],
  },
  {
    text: 'Concepts',
    items: [
      { text: 'The attention spec', link: '/concepts/spec' },
      { text: 'The expression language', link: '/concepts/expressions' },
      { text: 'Block layouts', link: '/concepts/block-layouts' },
      { text: 'Backends', link: '/concepts/backends' },
    ],
  },
  {
    text: 'Reference',
    items: [
      { text: 'Pattern gallery', link: '/gallery' },
      { text: 'Variants', link: '/variants' },
      { text: 'Benchmarks', link: '/benchmarks' },
      { text: 'Playground', link: '/playground' },
      { text: 'API reference', link: '/api/' },
    ],
  },
];

export default defineConfig({
  title: 'Tessera',
  description: 'Memory-efficient attention for TypeScript: one attention spec, many backends.',
  cleanUrls: true,
  head: [['link', { rel: 'icon', type: 'image/svg+xml', href: '/favicon.svg' }]],
  lastUpdated: false,
  // A dead internal link fails the build (the browser test checks the rendered links as well).
  ignoreDeadLinks: false,
  themeConfig: {
    nav: [
      { text: 'Guide', link: '/guide/getting-started' },
      { text: 'Concepts', link: '/concepts/spec' },
      { text: 'Gallery', link: '/gallery' },
      { text: 'Benchmarks', link: '/benchmarks' },
      { text: 'Playground', link: '/playground' },
      { text: 'API', link: '/api/' },
    ],
    sidebar: {
      '/api/': [{ text: 'API reference', items: apiSidebar() }],
      '/': guide,
    },
    search: { provider: 'local' },
    outline: { level: [2, 3] },
  },
  vite: {
    // @tessera/* resolve to their TypeScript sources, as in the tests: the site needs no prior build.
    resolve: { conditions: ['source', ...defaultClientConditions] },
    ssr: {
      resolve: { conditions: ['source', ...defaultServerConditions] },
      noExternal: [/^@tessera\//],
    },
    build: { chunkSizeWarningLimit: 2000 },
  },
});

export function resolveFile(root: string, pathname: string): string | undefined;
export function serveStatic(
  root: string,
  port?: number,
): Promise<{ url: string; close: () => Promise<void> }>;

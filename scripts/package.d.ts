// Types of scripts/package.js (plain JavaScript: it runs before anything is compiled).
export function publishedExport(target: string): { types: string; default: string };
export function publishedManifest<P extends { exports: Record<string, unknown> }>(pkg: P): Omit<P, 'exports'> & { exports: Record<string, unknown> };

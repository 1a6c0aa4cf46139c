// .ts in a checkout, .js in the published package (dist/): how the runner's modules end.
export const MODULE_EXT = import.meta.url.endsWith('.ts') ? '.ts' : '.js';

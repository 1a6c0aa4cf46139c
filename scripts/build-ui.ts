// npm run build:ui: bundles the dashboard (src/dashboard/web) into dist/ui/, the files the
// provider serves at /ui. A checkout builds them on first use anyway; a package built for
// publishing runs this in prepack, since an installed package may have no esbuild.
import { buildAssets } from '../src/dashboard/index.ts';

const report = await buildAssets();
for (const [name, size] of Object.entries(report.files)) console.error(`  ${name.padEnd(12)} ${(size / 1024).toFixed(1)} KiB`);
console.error(`dashboard built into ${report.dir}`);

// The allowed arrows between Shoal's parts, checked by `npm test` (dependency-cruiser).
// Each folder under src/ is a part; its index.ts is its door. The layering follows
// DESIGN.md: protocol at the bottom, the roles above it, the CLI on top.
//
// Type-only imports count like any other: a type from a part's insides couples the
// two parts just as much (dependency-cruiser's swc parser does not tell them apart).

/** part → the parts it may import (through their doors). A new part gets a line here. */
const arrows = {
  protocol: [], // wire types every role shares: imports nothing of Shoal
  http: ['protocol'], // the shared HTTP client
  image: ['protocol', 'http'],
  host: ['protocol', 'image', 'http'],
  provider: ['protocol', 'image', 'http', 'dashboard'],
  service: ['protocol'], // bundled into every image: the SDK stays small
  compose: ['protocol', 'service'],
  dashboard: ['protocol', 'http'],
  cli: ['protocol', 'http', 'image', 'host', 'provider', 'service', 'compose', 'dashboard'],
};

const parts = Object.keys(arrows);

/** @type {import('dependency-cruiser').IConfiguration} */
module.exports = {
  forbidden: [
    ...parts.map((part) => ({
      name: `arrows-from-${part}`,
      severity: 'error',
      comment: `${part} may import only ${arrows[part].length ? arrows[part].join(', ') : 'nothing of Shoal'} (.dependency-cruiser.cjs, arrows)`,
      from: { path: `^src/${part}/` },
      to: { path: '^src/[^/]+/', pathNot: `^src/(${[part, ...arrows[part]].join('|')})/` },
    })),
    {
      name: 'only-through-the-door',
      severity: 'error',
      comment: "another part's insides: import its index.ts (the door) instead",
      from: { path: '^src/([^/]+)/' },
      to: {
        path: '^src/[^/]+/',
        pathNot: [
          '^src/$1/',
          '^src/[^/]+/index\\.ts$',
          // The service SDK is bundled file by file into every image (src/image/sdk-bundle.ts):
          // through the door it would carry all of protocol into each instance's start-up.
          // Its one run-time protocol import is the error module. The CLI's `shoal call` path
          // takes it directly too: the door loads TypeBox and every schema (~0.1 s of start-up).
          '^src/protocol/errors\\.ts$',
        ],
      },
    },
    {
      name: 'service-only-protocol-errors',
      severity: 'error',
      comment: 'only the service SDK and the CLI (its start-up path) may reach src/protocol/errors.ts directly; others use the protocol door',
      from: { path: '^src/', pathNot: '^src/(service|protocol|cli)/' },
      to: { path: '^src/protocol/errors\\.ts$' },
    },
    {
      name: 'package-door-uses-doors',
      severity: 'error',
      comment: "src/index.ts (the shoal package's door) re-exports parts' doors only",
      from: { path: '^src/index\\.ts$' },
      to: { path: '^src/[^/]+/', pathNot: '^src/[^/]+/index\\.ts$' },
    },
    {
      name: 'src-not-to-outside',
      severity: 'error',
      comment: 'src/ ships; examples/, test/, bench/ and scripts/ do not',
      from: { path: '^src/' },
      to: { path: '^(examples|test|bench|scripts)/' },
    },
    {
      name: 'no-cycles',
      severity: 'error',
      comment: 'a cycle between modules: one of them must not know the other',
      from: {},
      to: { circular: true },
    },
    {
      name: 'not-to-unresolvable',
      severity: 'error',
      comment: 'an import that resolves to no file',
      from: {},
      to: { couldNotResolve: true },
    },
  ],
  options: {
    // TypeScript 7 has no JS API for dependency-cruiser to parse with; swc parses TS.
    parser: 'swc',
    doNotFollow: { path: 'node_modules' },
    exclude: { path: 'node_modules' },
    // package.json "exports" subpaths (hono/body-limit) resolve as Node resolves them.
    // Built-ins newer than the Node running the checker may be (node:sqlite is Node 22.5+).
    builtInModules: { add: ['node:sqlite'] },
    enhancedResolveOptions: { exportsFields: ['exports'], conditionNames: ['import', 'node', 'default'] },
  },
};

// For tools (the import codemod): the table itself, kept out of the validated config.
Object.defineProperty(module.exports, 'arrows', { value: arrows, enumerable: false });

/**
 * The dependency rules `npm run lint` enforces (dependency-cruiser): no import circles, and the
 * layers of ../shared/design/ARCHITECTURE.md's layout. A rule's comment is what a failure prints.
 */
const ROLES = '(guest|kvm|qemu|vfio|psmmu)';

/** @type {import('dependency-cruiser').IConfiguration} */
module.exports = {
  forbidden: [
    {
      name: 'no-circular',
      severity: 'error',
      comment: 'an import circle: break it by moving the shared part into a module both import, or by passing a callback',
      from: {},
      to: { circular: true },
    },
    {
      name: 'formats-are-pure',
      severity: 'error',
      comment: 'services/formats holds hardware and uapi structs and codecs: it imports nothing outside itself (no Node modules, no packages, no other vmmsim folder)',
      from: { path: '^services/formats/' },
      to: { pathNot: '^services/formats/' },
    },
    {
      name: 'roles-do-not-import-each-other',
      severity: 'error',
      comment: 'a role (guest, kvm, qemu, vfio, psmmu) is a process shell: it never imports another role; share code through services/machine, services/formats or a design',
      from: { path: `^services/${ROLES}/` },
      to: { path: `^services/${ROLES}/`, pathNot: '^services/$1/' },
    },
    {
      name: 'designs-never-touch-the-transport',
      severity: 'error',
      comment: 'a design sees requests (services/runtime/role-api.ts), never a stream, a link or a generated envelope',
      from: { path: '^services/designs/' },
      to: { path: '^services/runtime/(transport|generated)/' },
    },
    {
      name: 'only-the-controller-is-the-controller',
      severity: 'error',
      comment: 'services/controller is the CLI: nothing a role process loads may import it',
      from: { path: '^(services/(?!controller/)|worker-pool/)' },
      to: { path: '^services/controller/' },
    },
    {
      name: 'commands-are-leaves',
      severity: 'error',
      comment: 'a CLI command (services/controller/commands) is imported by the dispatcher (main.ts) only: share code through services/controller/cli',
      from: { path: '^services/controller/', pathNot: '^services/controller/main\\.ts$' },
      to: { path: '^services/controller/commands/' },
    },
    {
      name: 'hardware-queues-know-no-role',
      severity: 'error',
      comment: 'worker-pool plays the VCMDQ hardware: it imports formats and machine code, never a role',
      from: { path: '^worker-pool/' },
      to: { path: `^services/${ROLES}/` },
    },
  ],
  options: {
    doNotFollow: { path: 'node_modules' },
    exclude: { path: '^(dist|node_modules)/' },
    tsPreCompilationDeps: true,
    tsConfig: { fileName: 'tsconfig.json' },
    enhancedResolveOptions: { extensions: ['.ts', '.js', '.mjs', '.json'] },
  },
};

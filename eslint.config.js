import js from '@eslint/js';
import tseslint from 'typescript-eslint';

const DESIGN_NAMES = 'none|intel-cm|emulated-smmuv3|virtio-iommu|vhost-iommu|spapr-tce|spapr-tce-kvm|nested-smmuv3|nested-smmuv3-vcmdq';
const MODEL_LITERALS = [
  { selector: `Literal[value=/^(${DESIGN_NAMES})$/]`, message: 'a design\'s name outside services/designs: use its descriptor (designOf(model).traits) or MODEL.x from services/designs/names.ts' },
  { selector: `TemplateElement[value.raw=/^(${DESIGN_NAMES})$/]`, message: 'a design\'s name outside services/designs: use MODEL.x from services/designs/names.ts' },
];

export default tseslint.config(
  { ignores: ['dist/**', 'node_modules/**', 'services/runtime/generated/**', 'results/**'] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    languageOptions: { globals: { process: 'readonly', console: 'readonly' } },
    rules: {
      '@typescript-eslint/no-explicit-any': 'error',
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
      'no-constant-condition': ['error', { checkLoops: false }],
    },
  },
  // A design is named only in services/designs (names.ts): elsewhere code reaches it through its
  // descriptor's traits, or names it as MODEL.x where it means that one design on purpose.
  {
    files: ['services/**/*.ts', 'worker-pool/**/*.ts', 'bench/**/*.ts'],
    ignores: ['services/designs/**'],
    rules: {
      'no-restricted-syntax': ['error', ...MODEL_LITERALS],
    },
  },
  // CommonJS configuration files of the tools (dependency-cruiser).
  { files: ['**/*.cjs'], languageOptions: { sourceType: 'commonjs', globals: { module: 'writable', require: 'readonly' } } },
);

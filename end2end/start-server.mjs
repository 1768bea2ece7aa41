// Writes a fresh demo model into end2end/.work and serves it with the built binary.
import { execFileSync, spawn } from 'node:child_process';
import { rmSync, mkdirSync } from 'node:fs';
import { paths } from './tests/paths.mjs';

const port = process.argv[2] || '3107';
rmSync(paths.work, { recursive: true, force: true });
mkdirSync(paths.work, { recursive: true });
execFileSync(paths.bin, ['demo', '--out', paths.model], { stdio: 'inherit' });
const server = spawn(paths.bin, ['serve', '--model', paths.model, '--addr', `127.0.0.1:${port}`], {
  stdio: 'inherit',
  env: { ...process.env, LEPTOS_SITE_ROOT: paths.siteRoot, LEPTOS_SITE_PKG_DIR: 'pkg', LEPTOS_OUTPUT_NAME: 'tensor-surgeon' },
});
const stop = () => server.kill('SIGTERM');
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
server.on('exit', (code) => process.exit(code ?? 0));

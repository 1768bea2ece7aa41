// Where the end-to-end tests find the binary, the site and their scratch model.
import { fileURLToPath } from 'node:url';
import path from 'node:path';

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, '..', '..');
const work = path.resolve(here, '..', '.work');

export const paths = {
  root,
  work,
  bin: process.env.TENSOR_SURGEON_BIN || path.join(root, 'target', 'debug', 'tensor-surgeon'),
  siteRoot: path.join(root, 'target', 'site'),
  model: path.join(work, 'demo', 'model'),
};

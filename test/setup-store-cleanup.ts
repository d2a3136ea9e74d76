import { afterAll } from 'vitest';
import { deleteBuiltClosures } from './helpers/nix.js';

// Every test file removes the store paths it built (see deleteBuiltClosures).
afterAll(deleteBuiltClosures, 120_000);

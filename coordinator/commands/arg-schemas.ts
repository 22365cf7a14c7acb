import { z } from 'zod';
import { ID_PATTERN, VERSION_PATTERN } from '../../shared/names.js';

/** Names in command arguments (shared/names.ts), with the fix in the message. */
export const idArg = z.string().regex(ID_PATTERN, 'use 1-64 letters, digits, ".", "_" or "-"');
export const versionArg = z.string().regex(VERSION_PATTERN, 'use 1-64 letters, digits, ".", "_", "+" or "-"');

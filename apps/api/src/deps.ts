import type { Redis } from 'ioredis';
import type { Database } from '@platform/db';
import type { BlobStore, Producer } from '@platform/jobs';
import type { ApiConfig } from './config';

/** What the routes need; built by server.ts (or a test) and closed by the app's onClose. */
export interface ApiDeps {
  config: ApiConfig;
  database: Database;
  redis: Redis;
  producer: Producer;
  blobs: BlobStore;
}

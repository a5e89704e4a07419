// What the global setup provides to every test file (vitest's inject()).
import 'vitest';

declare module 'vitest' {
  export interface ProvidedContext {
    pgAdminUrl: string;
    redisUrl: string;
    redisPort: number;
  }
}

import { DEFAULT_QUEUE_PREFIX } from '@platform/jobs';
import { z } from 'zod';

const optionalText = z
  .string()
  .optional()
  .transform((v) => (v === undefined || v === '' ? undefined : v));

/** Parsed once at start-up from `process.env` (STYLE habit 6); nothing else reads the environment. */
export const configSchema = z
  .object({
    DATABASE_URL: z.string({ error: 'DATABASE_URL is required' }).min(1, 'DATABASE_URL is required'),
    REDIS_URL: z.string({ error: 'REDIS_URL is required' }).min(1, 'REDIS_URL is required'),
    DASHBOARD_PORT: z.coerce.number().int().min(0).max(65535).default(3001),
    DASHBOARD_HOST: z.string().min(1).default('0.0.0.0'),
    DASHBOARD_USER: optionalText.pipe(
      z
        .string()
        .regex(/^[^:\s]+$/, 'DASHBOARD_USER may not contain ":" or spaces (HTTP Basic splits on the first ":")')
        .optional(),
    ),
    DASHBOARD_PASSWORD: optionalText,
    QUEUE_PREFIX: z.string().min(1).default(DEFAULT_QUEUE_PREFIX),
    // Signs session cookies. Without it a random one is made per start, so sessions end on restart.
    SESSION_SECRET: optionalText.pipe(z.string().min(32, 'SESSION_SECRET must be at least 32 characters').optional()),
    // `auto` marks the cookie Secure when the request came over https (see DASHBOARD_TRUST_PROXY).
    DASHBOARD_COOKIE_SECURE: z.enum(['auto', 'true', 'false']).default('auto'),
    // Behind a TLS-terminating proxy: trust X-Forwarded-Proto/-For/-Host so `auto` sees https.
    DASHBOARD_TRUST_PROXY: z.stringbool().default(false),
    DASHBOARD_DB_POOL_MAX: z.coerce.number().int().min(1).max(50).default(4),
    // Sign-in throttling (form and HTTP Basic), per username and per client address.
    DASHBOARD_LOGIN_MAX_FAILURES: z.coerce.number().int().min(1).max(1000).default(5),
    DASHBOARD_LOGIN_WINDOW_S: z.coerce.number().int().min(1).max(86_400).default(900),
    // At most this many failed jobs are requeued by one redrive.
    DASHBOARD_REDRIVE_MAX: z.coerce.number().int().min(1).max(10_000).default(1_000),
    // `false`: requeued jobs go in plain FIFO order, as with the API's and worker's FAIR_SCHEDULING.
    FAIR_SCHEDULING: z.enum(['true', 'false']).default('true'),
    // Background work of the dashboard process (see maintenance.ts); 0 turns a loop off.
    DASHBOARD_SAMPLE_INTERVAL_MS: z.coerce.number().int().min(0).max(3_600_000).default(10_000),
    DASHBOARD_PURGE_INTERVAL_MS: z.coerce.number().int().min(0).default(600_000),
    HISTORY_RETENTION_DAYS: z.coerce.number().min(1).default(90),
    AUDIT_RETENTION_DAYS: z.coerce.number().min(1).default(365),
    QUEUE_SAMPLES_RAW_HOURS: z.coerce.number().min(1).default(24),
    QUEUE_SAMPLES_RETENTION_DAYS: z.coerce.number().min(1).default(30),
    LOG_LEVEL: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
  })
  .refine((c) => (c.DASHBOARD_USER === undefined) === (c.DASHBOARD_PASSWORD === undefined), {
    message: 'DASHBOARD_USER and DASHBOARD_PASSWORD must be set together',
    path: ['DASHBOARD_PASSWORD'],
  })
  .refine((c) => c.AUDIT_RETENTION_DAYS >= c.HISTORY_RETENTION_DAYS, {
    message: 'AUDIT_RETENTION_DAYS must be at least HISTORY_RETENTION_DAYS (the audit log names jobs of the history)',
    path: ['AUDIT_RETENTION_DAYS'],
  });

export type DashboardConfig = z.output<typeof configSchema>;

export class ConfigError extends Error {
  override name = 'ConfigError';
}

export function loadConfig(env: Record<string, string | undefined>): DashboardConfig {
  const parsed = configSchema.safeParse(env);
  if (!parsed.success) {
    const lines = parsed.error.issues.map((i) => `  ${i.path.join('.') || '(env)'}: ${i.message}`);
    throw new ConfigError(`invalid dashboard configuration:\n${lines.join('\n')}`);
  }
  return parsed.data;
}

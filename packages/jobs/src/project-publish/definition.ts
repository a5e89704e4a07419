import { z } from 'zod';
import { defineJob, tableLockKey } from '../define-job';

export const publishPayload = z.object({
  projectId: z.uuid(),
  revisionId: z.uuid(),
  /** The project's tables when the publish was accepted: it writes each of them. */
  tableIds: z.array(z.uuid()).max(500),
});

export const publishJob = defineJob({
  name: 'project.publish',
  version: 1,
  queue: 'project-publish',
  payload: publishPayload,
  defaults: { attempts: 5, backoffMs: 1_000, maxRunTimeMs: 60 * 60_000 },
  lockKeys: (p) => [`project:${p.projectId}`, ...p.tableIds.map(tableLockKey)],
  workClass: (p) => (p.tableIds.length <= 1 ? 'interactive' : 'bulk'),
});

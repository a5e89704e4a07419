-- Custom SQL migration (drizzle-kit generate --custom): indexes on `jobs` for the support
-- dashboard (issue 5). They live here rather than in schema/jobs.ts because that file belongs to
-- the job runtime; drizzle-kit does not see them, so it neither generates nor drops them.
-- Moving them into the table's definition later means deleting nothing here: declare the same
-- names there and drop the generated CREATEs from that migration.
--
-- Staff search is a keyset scan newest first on (created_at, id); each index below yields rows of
-- one filter in that order, so a page reads about `limit` entries instead of sorting every match
-- (measured: bench/dashboard-search.ts, 1M rows). They index columns that a chunk's progress
-- update never changes, so those updates stay HOT.
CREATE INDEX IF NOT EXISTS "jobs_created_idx" ON "jobs" USING btree ("created_at" DESC, "id" DESC);--> statement-breakpoint
CREATE INDEX IF NOT EXISTS "jobs_status_created_idx" ON "jobs" USING btree ("status", "created_at" DESC, "id" DESC);--> statement-breakpoint
CREATE INDEX IF NOT EXISTS "jobs_type_created_idx" ON "jobs" USING btree ("type", "created_at" DESC, "id" DESC);--> statement-breakpoint
CREATE INDEX IF NOT EXISTS "jobs_team_status_created_idx" ON "jobs" USING btree ("team_id", "status", "created_at" DESC, "id" DESC);--> statement-breakpoint
-- The sampler counts the jobs that ended in the last interval, every 10 s.
CREATE INDEX IF NOT EXISTS "jobs_finished_idx" ON "jobs" USING btree ("finished_at") WHERE "finished_at" IS NOT NULL;

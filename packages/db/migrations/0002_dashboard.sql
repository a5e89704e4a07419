CREATE TABLE "job_events" (
	"id" bigint PRIMARY KEY GENERATED ALWAYS AS IDENTITY (sequence name "job_events_id_seq" INCREMENT BY 1 MINVALUE 1 MAXVALUE 9223372036854775807 START WITH 1 CACHE 1),
	"job_id" uuid NOT NULL,
	"at" timestamp with time zone DEFAULT now() NOT NULL,
	"kind" text NOT NULL,
	"detail" jsonb
);
--> statement-breakpoint
CREATE TABLE "audit_log" (
	"id" bigint PRIMARY KEY GENERATED ALWAYS AS IDENTITY (sequence name "audit_log_id_seq" INCREMENT BY 1 MINVALUE 1 MAXVALUE 9223372036854775807 START WITH 1 CACHE 1),
	"at" timestamp with time zone DEFAULT now() NOT NULL,
	"actor" text NOT NULL,
	"actor_role" text NOT NULL,
	"via" text NOT NULL,
	"action" text NOT NULL,
	"params" jsonb NOT NULL,
	"job_ids" uuid[] DEFAULT '{}'::uuid[] NOT NULL,
	"outcome" jsonb,
	"finished_at" timestamp with time zone
);
--> statement-breakpoint
CREATE TABLE "queue_samples" (
	"queue" text NOT NULL,
	"step_s" integer NOT NULL,
	"at" timestamp with time zone NOT NULL,
	"waiting" real NOT NULL,
	"active" real NOT NULL,
	"delayed" real NOT NULL,
	"failed" real NOT NULL,
	"completed_count" integer NOT NULL,
	"failed_count" integer NOT NULL,
	CONSTRAINT "queue_samples_queue_step_s_at_pk" PRIMARY KEY("queue","step_s","at")
);
--> statement-breakpoint
ALTER TABLE "job_events" ADD CONSTRAINT "job_events_job_id_jobs_id_fk" FOREIGN KEY ("job_id") REFERENCES "public"."jobs"("id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
CREATE INDEX "job_events_job_at_idx" ON "job_events" USING btree ("job_id","at");--> statement-breakpoint
CREATE INDEX "audit_log_at_idx" ON "audit_log" USING btree ("at");--> statement-breakpoint
CREATE INDEX "audit_log_job_ids_idx" ON "audit_log" USING gin ("job_ids");--> statement-breakpoint
CREATE INDEX "queue_samples_at_idx" ON "queue_samples" USING btree ("at");
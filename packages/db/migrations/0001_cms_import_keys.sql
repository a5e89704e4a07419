CREATE TABLE "cms_import_keys" (
	"job_id" uuid NOT NULL,
	"identifier" text NOT NULL,
	"line" integer NOT NULL,
	CONSTRAINT "cms_import_keys_job_id_identifier_pk" PRIMARY KEY("job_id","identifier")
);
--> statement-breakpoint
ALTER TABLE "cms_import_keys" ADD CONSTRAINT "cms_import_keys_job_id_jobs_id_fk" FOREIGN KEY ("job_id") REFERENCES "public"."jobs"("id") ON DELETE cascade ON UPDATE no action;
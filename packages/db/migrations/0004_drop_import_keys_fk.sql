ALTER TABLE "cms_import_keys" DROP CONSTRAINT "cms_import_keys_job_id_jobs_id_fk";

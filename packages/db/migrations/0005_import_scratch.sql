CREATE SCHEMA "import_scratch";
--> statement-breakpoint
DROP TABLE "cms_import_keys" CASCADE;
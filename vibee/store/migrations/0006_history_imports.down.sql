DROP TABLE IF EXISTS history_imports;

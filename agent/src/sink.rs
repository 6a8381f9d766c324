//! `--output jsonl:PATH`: one JSON object per record, for standalone use and tests.

use std::{
    fs::File,
    io::{self, BufWriter, Write},
};

use demarc_proto::ingest::Record;

pub struct JsonlSink {
    out: BufWriter<Box<dyn Write + Send>>,
}

impl JsonlSink {
    /// `-` is standard output; a file is created (truncated) otherwise.
    pub fn open(path: &str) -> io::Result<Self> {
        let w: Box<dyn Write + Send> = if path == "-" {
            Box::new(io::stdout())
        } else {
            Box::new(File::create(path)?)
        };
        Ok(Self {
            out: BufWriter::new(w),
        })
    }

    pub fn write(&mut self, records: &[Record]) -> io::Result<()> {
        for r in records {
            serde_json::to_writer(&mut self.out, r)?;
            self.out.write_all(b"\n")?;
        }
        self.out.flush()
    }
}

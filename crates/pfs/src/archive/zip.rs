//! A minimal, deterministic ZIP writer for entries whose stored form is known before they are
//! written: method, CRC-32 and both sizes go into the local header, so the entry data is a plain
//! copy (of a cached deflate stream, or of the blob itself) and no data descriptor is needed.
//! ZIP64 records are added exactly where a size, offset or count needs them.
//!
//! Layout per entry: local file header (UTF-8 name flag, the archive's one DOS timestamp), data;
//! then the central directory (Unix mode 0644 regular files) and the end records.

use tokio::io::{AsyncWrite, AsyncWriteExt};

/// ZIP compression methods we write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Method {
    Stored,
    Deflate,
}

impl Method {
    pub fn code(self) -> u16 {
        match self {
            Method::Stored => 0,
            Method::Deflate => 8,
        }
    }

    pub fn from_code(c: i64) -> Option<Method> {
        match c {
            0 => Some(Method::Stored),
            8 => Some(Method::Deflate),
            _ => None,
        }
    }
}

/// What the local header of an entry says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryHeader {
    pub name: String,
    pub method: Method,
    pub crc32: u32,
    pub compressed_size: u64,
    pub uncompressed_size: u64,
}

struct CentralRecord {
    header: EntryHeader,
    offset: u64,
}

const U32_MAX: u64 = 0xFFFF_FFFF;
const FLAG_UTF8: u16 = 0x0800;
const VERSION_20: u16 = 20;
const VERSION_ZIP64: u16 = 45;
/// "Made by" Unix (3) in the high byte.
const MADE_BY_UNIX: u16 = 3 << 8;
/// Regular file, mode 0644, in the high 16 bits of the external attributes.
const UNIX_FILE_0644: u32 = 0o100_644 << 16;

/// The DOS date and time fields of a UTC timestamp (clamped to 1980..=2107, 2-second precision).
pub fn dos_date_time(
    year: i32,
    month: u32,
    day: u32,
    hour: u32,
    minute: u32,
    second: u32,
) -> (u16, u16) {
    let year = year.clamp(1980, 2107);
    let date = (((year - 1980) as u32) << 9) | (month << 5) | day;
    let time = (hour << 11) | (minute << 5) | (second / 2);
    (time as u16, date as u16)
}

/// Writes a ZIP to `out`, counting every byte.
pub struct ZipWriter<W> {
    out: W,
    written: u64,
    central: Vec<CentralRecord>,
    time: u16,
    date: u16,
    /// Bytes still owed to the open entry.
    remaining: u64,
}

impl<W: AsyncWrite + Unpin> ZipWriter<W> {
    /// A writer whose every entry carries the DOS `(time, date)`.
    pub fn new(out: W, (time, date): (u16, u16)) -> Self {
        ZipWriter {
            out,
            written: 0,
            central: Vec::new(),
            time,
            date,
            remaining: 0,
        }
    }

    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    async fn put(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.out.write_all(bytes).await?;
        self.written += bytes.len() as u64;
        Ok(())
    }

    /// Start an entry: its local header. Exactly `compressed_size` bytes of data must follow
    /// ([`ZipWriter::data`]) before the next entry or [`ZipWriter::finish`].
    pub async fn start(&mut self, h: EntryHeader) -> std::io::Result<()> {
        if self.remaining != 0 {
            return Err(std::io::Error::other(
                "zip: the previous entry is short of data",
            ));
        }
        let zip64 = h.compressed_size >= U32_MAX || h.uncompressed_size >= U32_MAX;
        let mut b = Vec::with_capacity(30 + h.name.len() + 20);
        b.extend_from_slice(&0x0403_4b50u32.to_le_bytes());
        b.extend_from_slice(&(if zip64 { VERSION_ZIP64 } else { VERSION_20 }).to_le_bytes());
        b.extend_from_slice(&FLAG_UTF8.to_le_bytes());
        b.extend_from_slice(&h.method.code().to_le_bytes());
        b.extend_from_slice(&self.time.to_le_bytes());
        b.extend_from_slice(&self.date.to_le_bytes());
        b.extend_from_slice(&h.crc32.to_le_bytes());
        if zip64 {
            b.extend_from_slice(&(U32_MAX as u32).to_le_bytes());
            b.extend_from_slice(&(U32_MAX as u32).to_le_bytes());
        } else {
            b.extend_from_slice(&(h.compressed_size as u32).to_le_bytes());
            b.extend_from_slice(&(h.uncompressed_size as u32).to_le_bytes());
        }
        b.extend_from_slice(&(h.name.len() as u16).to_le_bytes());
        b.extend_from_slice(&(if zip64 { 20u16 } else { 0 }).to_le_bytes());
        b.extend_from_slice(h.name.as_bytes());
        if zip64 {
            b.extend_from_slice(&1u16.to_le_bytes());
            b.extend_from_slice(&16u16.to_le_bytes());
            b.extend_from_slice(&h.uncompressed_size.to_le_bytes());
            b.extend_from_slice(&h.compressed_size.to_le_bytes());
        }
        let offset = self.written;
        self.put(&b).await?;
        self.remaining = h.compressed_size;
        self.central.push(CentralRecord { header: h, offset });
        Ok(())
    }

    /// Entry data (at most what the open entry is still owed).
    pub async fn data(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        if bytes.len() as u64 > self.remaining {
            return Err(std::io::Error::other(
                "zip: more data than the entry header announced",
            ));
        }
        self.remaining -= bytes.len() as u64;
        self.put(bytes).await
    }

    /// What the open entry is still owed.
    pub fn remaining(&self) -> u64 {
        self.remaining
    }

    /// Write the central directory and end records, flush and shut `out` down. Returns the
    /// output and the total bytes written.
    pub async fn finish(mut self) -> std::io::Result<(W, u64)> {
        if self.remaining != 0 {
            return Err(std::io::Error::other(
                "zip: the last entry is short of data",
            ));
        }
        let cd_offset = self.written;
        let records = std::mem::take(&mut self.central);
        for r in &records {
            let h = &r.header;
            let mut extra = Vec::new();
            if h.uncompressed_size >= U32_MAX {
                extra.extend_from_slice(&h.uncompressed_size.to_le_bytes());
            }
            if h.compressed_size >= U32_MAX {
                extra.extend_from_slice(&h.compressed_size.to_le_bytes());
            }
            if r.offset >= U32_MAX {
                extra.extend_from_slice(&r.offset.to_le_bytes());
            }
            let zip64 = !extra.is_empty();
            let version = if zip64 { VERSION_ZIP64 } else { VERSION_20 };
            let clamp = |v: u64| {
                if v >= U32_MAX {
                    U32_MAX as u32
                } else {
                    v as u32
                }
            };
            let mut b = Vec::with_capacity(46 + h.name.len() + 28);
            b.extend_from_slice(&0x0201_4b50u32.to_le_bytes());
            b.extend_from_slice(&(MADE_BY_UNIX | version).to_le_bytes());
            b.extend_from_slice(&version.to_le_bytes());
            b.extend_from_slice(&FLAG_UTF8.to_le_bytes());
            b.extend_from_slice(&h.method.code().to_le_bytes());
            b.extend_from_slice(&self.time.to_le_bytes());
            b.extend_from_slice(&self.date.to_le_bytes());
            b.extend_from_slice(&h.crc32.to_le_bytes());
            b.extend_from_slice(&clamp(h.compressed_size).to_le_bytes());
            b.extend_from_slice(&clamp(h.uncompressed_size).to_le_bytes());
            b.extend_from_slice(&(h.name.len() as u16).to_le_bytes());
            let extra_len = if zip64 { extra.len() + 4 } else { 0 };
            b.extend_from_slice(&(extra_len as u16).to_le_bytes());
            b.extend_from_slice(&0u16.to_le_bytes()); // comment
            b.extend_from_slice(&0u16.to_le_bytes()); // disk
            b.extend_from_slice(&0u16.to_le_bytes()); // internal attributes
            b.extend_from_slice(&UNIX_FILE_0644.to_le_bytes());
            b.extend_from_slice(&clamp(r.offset).to_le_bytes());
            b.extend_from_slice(h.name.as_bytes());
            if zip64 {
                b.extend_from_slice(&1u16.to_le_bytes());
                b.extend_from_slice(&(extra.len() as u16).to_le_bytes());
                b.extend_from_slice(&extra);
            }
            self.put(&b).await?;
        }
        let cd_size = self.written - cd_offset;
        let count = records.len() as u64;
        if count >= 0xFFFF || cd_offset >= U32_MAX || cd_size >= U32_MAX {
            let eocd64_offset = self.written;
            let mut b = Vec::with_capacity(56 + 20);
            b.extend_from_slice(&0x0606_4b50u32.to_le_bytes());
            b.extend_from_slice(&44u64.to_le_bytes());
            b.extend_from_slice(&(MADE_BY_UNIX | VERSION_ZIP64).to_le_bytes());
            b.extend_from_slice(&VERSION_ZIP64.to_le_bytes());
            b.extend_from_slice(&0u32.to_le_bytes());
            b.extend_from_slice(&0u32.to_le_bytes());
            b.extend_from_slice(&count.to_le_bytes());
            b.extend_from_slice(&count.to_le_bytes());
            b.extend_from_slice(&cd_size.to_le_bytes());
            b.extend_from_slice(&cd_offset.to_le_bytes());
            b.extend_from_slice(&0x0706_4b50u32.to_le_bytes());
            b.extend_from_slice(&0u32.to_le_bytes());
            b.extend_from_slice(&eocd64_offset.to_le_bytes());
            b.extend_from_slice(&1u32.to_le_bytes());
            self.put(&b).await?;
        }
        let mut b = Vec::with_capacity(22);
        let count16 = count.min(0xFFFF) as u16;
        b.extend_from_slice(&0x0605_4b50u32.to_le_bytes());
        b.extend_from_slice(&0u16.to_le_bytes());
        b.extend_from_slice(&0u16.to_le_bytes());
        b.extend_from_slice(&count16.to_le_bytes());
        b.extend_from_slice(&count16.to_le_bytes());
        b.extend_from_slice(&(cd_size.min(U32_MAX) as u32).to_le_bytes());
        b.extend_from_slice(&(cd_offset.min(U32_MAX) as u32).to_le_bytes());
        b.extend_from_slice(&0u16.to_le_bytes());
        self.put(&b).await?;
        self.out.flush().await?;
        self.out.shutdown().await?;
        Ok((self.out, self.written))
    }
}

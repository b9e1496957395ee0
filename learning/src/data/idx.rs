//! IDX files (MNIST's format): images and labels, gzip-compressed or raw.

use std::path::Path;

use crate::Error;

use super::{Dataset, Result, read_file};

fn be_u32(bytes: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

/// Loads IDX images (magic 0x00000803) and labels (0x00000801), gzip-compressed or raw.
/// Pixel values are returned as read (0–255); see [`Preprocess`](super::Preprocess) for scaling.
pub fn load_idx(images: &Path, labels: &Path) -> Result<Dataset> {
    let fmt = |path: &Path, detail: String| Error::Format { path: path.to_owned(), detail };
    let (pixels, n, dim) = load_idx_images(images)?;
    let lab = read_file(labels)?;
    if lab.len() < 8 {
        return Err(fmt(labels, format!("truncated: {} bytes, an IDX label header needs 8", lab.len())));
    }
    if be_u32(&lab, 0) != 0x0801 {
        return Err(fmt(
            labels,
            format!("bad magic number {:#010x}, expected 0x00000801 (IDX labels)", be_u32(&lab, 0)),
        ));
    }
    let m = be_u32(&lab, 4) as usize;
    if lab.len() != 8 + m {
        return Err(fmt(
            labels,
            format!("truncated or oversized: header says {m} labels, file has {} bytes", lab.len()),
        ));
    }
    if m != n {
        return Err(fmt(labels, format!("{m} labels for {n} images in {}", images.display())));
    }
    let label_vec: Vec<u32> = lab[8..].iter().map(|&b| b as u32).collect();
    let classes = label_vec.iter().max().map_or(0, |&m| m as usize + 1);
    Dataset::new(pixels, label_vec, dim, classes)
}

/// Loads IDX images alone (magic 0x00000803), e.g. unlabelled public inputs: the row-major
/// pixel values as read (0–255), the image count and the pixels per image.
pub fn load_idx_images(images: &Path) -> Result<(Vec<f32>, usize, usize)> {
    let fmt = |path: &Path, detail: String| Error::Format { path: path.to_owned(), detail };
    let img = read_file(images)?;
    if img.len() < 16 {
        return Err(fmt(images, format!("truncated: {} bytes, an IDX image header needs 16", img.len())));
    }
    if be_u32(&img, 0) != 0x0803 {
        return Err(fmt(
            images,
            format!("bad magic number {:#010x}, expected 0x00000803 (IDX images)", be_u32(&img, 0)),
        ));
    }
    let (n, rows, cols) = (be_u32(&img, 4) as usize, be_u32(&img, 8) as usize, be_u32(&img, 12) as usize);
    let need = n.checked_mul(rows).and_then(|v| v.checked_mul(cols)).and_then(|v| v.checked_add(16));
    if need != Some(img.len()) {
        return Err(fmt(
            images,
            format!("truncated or oversized: header says {n} × {rows} × {cols}, file has {} bytes", img.len()),
        ));
    }
    Ok((img[16..].iter().map(|&b| b as f32).collect(), n, rows * cols))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::test_files::tmp;
    use std::io::Write;

    fn idx_images(n: u32, rows: u32, cols: u32) -> Vec<u8> {
        let mut v = [0x0803u32, n, rows, cols].iter().flat_map(|x| x.to_be_bytes()).collect::<Vec<u8>>();
        v.extend((0..n * rows * cols).map(|i| (i % 256) as u8));
        v
    }

    fn idx_labels(labels: &[u8]) -> Vec<u8> {
        let mut v = [0x0801u32, labels.len() as u32].iter().flat_map(|x| x.to_be_bytes()).collect::<Vec<u8>>();
        v.extend_from_slice(labels);
        v
    }

    #[test]
    fn idx_loads_raw_and_gzip_and_names_bad_files() {
        let dir = tempfile::tempdir().unwrap();
        let img = tmp(&dir, "i.idx", &idx_images(3, 2, 2));
        let lab = tmp(&dir, "l.idx", &idx_labels(&[0, 2, 1]));
        let d = load_idx(&img, &lab).unwrap();
        assert_eq!((d.len(), d.dim, d.classes), (3, 4, 3));
        assert_eq!(d.row(1), &[4.0, 5.0, 6.0, 7.0]);

        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&idx_images(3, 2, 2)).unwrap();
        let gz_img = tmp(&dir, "i.idx.gz", &gz.finish().unwrap());
        assert_eq!(load_idx(&gz_img, &lab).unwrap(), d);

        let missing = load_idx(Path::new("/nonexistent/x.idx"), &lab).unwrap_err().to_string();
        assert!(missing.contains("/nonexistent/x.idx"), "{missing}");
        let bad_magic = tmp(&dir, "bad.idx", &idx_labels(&[1; 20]));
        let e = load_idx(&bad_magic, &lab).unwrap_err().to_string();
        assert!(e.contains("bad magic") && e.contains("bad.idx"), "{e}");
        let mut short = idx_images(3, 2, 2);
        short.truncate(20);
        let e = load_idx(&tmp(&dir, "short.idx", &short), &lab).unwrap_err().to_string();
        assert!(e.contains("truncated"), "{e}");
        let e = load_idx(&img, &tmp(&dir, "l2.idx", &idx_labels(&[0, 1]))).unwrap_err().to_string();
        assert!(e.contains("2 labels for 3 images"), "{e}");
        let e = load_idx(&tmp(&dir, "corrupt.gz", &[0x1f, 0x8b, 1, 2, 3]), &lab).unwrap_err().to_string();
        assert!(e.contains("corrupt gzip"), "{e}");
    }
}

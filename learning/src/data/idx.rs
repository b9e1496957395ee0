//! IDX files (MNIST's format): images and labels, gzip-compressed or raw.

use std::io::{BufReader, Read, Seek};
use std::path::Path;

use crate::Error;

use super::{Dataset, Result, read_file, read_rows};

fn be_u32(bytes: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

/// Loads IDX images (magic 0x00000803) and labels (0x00000801), gzip-compressed or raw.
/// Pixel values are returned as read (0–255); see [`Preprocess`](super::Preprocess) for scaling.
pub fn load_idx(images: &Path, labels: &Path) -> Result<Dataset> {
    let fmt = |path: &Path, detail: String| Error::Format { path: path.to_owned(), detail };
    let (pixels, n, dim) = load_idx_images(images)?;
    let (label_vec, classes) = read_labels(labels)?;
    if label_vec.len() != n {
        return Err(fmt(labels, format!("{} labels for {n} images in {}", label_vec.len(), images.display())));
    }
    Dataset::new(pixels, label_vec, dim, classes)
}

/// The labels of an IDX labels file (magic 0x00000801) and the class count they imply (the
/// largest label plus one).
fn read_labels(labels: &Path) -> Result<(Vec<u32>, usize)> {
    let fmt = |path: &Path, detail: String| Error::Format { path: path.to_owned(), detail };
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
    let label_vec: Vec<u32> = lab[8..].iter().map(|&b| b as u32).collect();
    let classes = label_vec.iter().max().map_or(0, |&m| m as usize + 1);
    Ok((label_vec, classes))
}

/// Loads the IDX images that the row-index file `rows` names, in its order, with their labels:
/// the same data set as `load_idx(images, labels)?.subset(&read_rows(rows, n)?)`, but the images
/// file is read as a stream and only the named rows are kept, so memory holds them alone (a
/// node with 500 of MNIST's 60,000 training images holds 1.6 MB instead of the whole file's
/// 188 MB of floats, and its 47 MB of pixels).
pub fn load_idx_rows(images: &Path, labels: &Path, rows: &Path) -> Result<Dataset> {
    let fmt = |detail: String| Error::Format { path: images.to_owned(), detail };
    let (all_labels, classes) = read_labels(labels)?;
    let open_err = |source| Error::Io { path: images.to_owned(), source };
    let mut file = std::fs::File::open(images).map_err(open_err)?;
    let mut magic = [0u8; 2];
    let gzip = file.read_exact(&mut magic).is_ok() && magic == [0x1f, 0x8b];
    file.seek(std::io::SeekFrom::Start(0)).map_err(open_err)?;
    let mut reader: Box<dyn Read> = if gzip {
        Box::new(flate2::read::GzDecoder::new(BufReader::new(file)))
    } else {
        Box::new(BufReader::new(file))
    };
    let io = |source: std::io::Error| {
        if source.kind() == std::io::ErrorKind::UnexpectedEof {
            fmt("truncated: the file ends before the images its header counts".into())
        } else if gzip {
            Error::Gzip { path: images.to_owned(), source }
        } else {
            Error::Io { path: images.to_owned(), source }
        }
    };
    let mut header = [0u8; 16];
    reader.read_exact(&mut header).map_err(io)?;
    if be_u32(&header, 0) != 0x0803 {
        return Err(fmt(format!("bad magic number {:#010x}, expected 0x00000803 (IDX images)", be_u32(&header, 0))));
    }
    let (n, h, w) = (be_u32(&header, 4) as usize, be_u32(&header, 8) as usize, be_u32(&header, 12) as usize);
    let dim = h.checked_mul(w).filter(|&d| d > 0).ok_or_else(|| fmt(format!("images of {h} × {w} pixels")))?;
    if all_labels.len() != n {
        return Err(Error::Format {
            path: labels.to_owned(),
            detail: format!("{} labels for {n} images in {}", all_labels.len(), images.display()),
        });
    }
    let wanted = read_rows(rows, n)?;
    // (image, place) in the order the stream meets them.
    let mut order: Vec<(usize, usize)> = wanted.iter().enumerate().map(|(place, &i)| (i, place)).collect();
    order.sort_unstable();
    let mut features = vec![0f32; wanted.len() * dim];
    let mut pixels = vec![0u8; dim];
    let mut next = order.iter().peekable();
    for i in 0..n {
        if next.peek().is_none() {
            break;
        }
        reader.read_exact(&mut pixels).map_err(io)?;
        while let Some(&(_, place)) = next.next_if(|(image, _)| *image == i) {
            for (f, &p) in features[place * dim..(place + 1) * dim].iter_mut().zip(&pixels) {
                *f = p as f32;
            }
        }
    }
    let labels = wanted.iter().map(|&i| all_labels[i]).collect();
    Dataset::new(features, labels, dim, classes)
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

    #[test]
    fn named_rows_stream_to_the_subset_of_the_whole_file() {
        let dir = tempfile::tempdir().unwrap();
        let raw = idx_images(6, 2, 3);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&raw).unwrap();
        let gz_img = tmp(&dir, "i.idx.gz", &gz.finish().unwrap());
        let img = tmp(&dir, "i.idx", &raw);
        let lab = tmp(&dir, "l.idx", &idx_labels(&[0, 2, 1, 4, 3, 1]));
        // Out of order, repeated, and the last image.
        let rows = tmp(&dir, "rows.txt", b"5\n1\n1\n3\n");
        let whole = load_idx(&img, &lab).unwrap().subset(&[5, 1, 1, 3]);
        for images in [&img, &gz_img] {
            let d = load_idx_rows(images, &lab, &rows).unwrap();
            assert_eq!(d, whole, "{}", images.display());
            assert_eq!(d.classes, 5, "the classes of the whole labels file");
        }
        // The checks of a whole load: a row beyond the file, a truncated file, bad magic, a
        // labels file of another length.
        let e = load_idx_rows(&img, &lab, &tmp(&dir, "far.txt", b"6\n")).unwrap_err().to_string();
        assert!(e.contains("beyond the 6 rows"), "{e}");
        let e = load_idx_rows(&tmp(&dir, "short.idx", &raw[..16 + 6 * 3]), &lab, &rows).unwrap_err().to_string();
        assert!(e.contains("truncated"), "{e}");
        let e = load_idx_rows(&tmp(&dir, "bad.idx", &idx_labels(&[1; 20])), &lab, &rows).unwrap_err().to_string();
        assert!(e.contains("bad magic"), "{e}");
        let e = load_idx_rows(&img, &tmp(&dir, "l2.idx", &idx_labels(&[0, 1])), &rows).unwrap_err().to_string();
        assert!(e.contains("2 labels for 6 images"), "{e}");
        let e = load_idx_rows(&tmp(&dir, "corrupt.gz", &[0x1f, 0x8b, 1, 2, 3]), &lab, &rows).unwrap_err().to_string();
        assert!(e.contains("corrupt gzip") || e.contains("truncated"), "{e}");
    }
}

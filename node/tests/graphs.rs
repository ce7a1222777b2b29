//! `/render` images, decoded: PNG size, a drawn plot, each series' colour,
//! legend text (SVG), axis bounds, and 400s for bad graph parameters.

use std::time::Duration;

use graunt_harness::node::Node;
use graunt_harness::temp_dir;
use graunt_storage::whisper::{self, CreateOptions, Retention, WhisperFile};

const BIN: &str = env!("CARGO_BIN_EXE_graunt");
const NOW: i64 = 1_700_000_000;

fn tree(root: &std::path::Path) {
    for (name, scale) in [("web1", 1.0), ("web2", 3.0)] {
        let path = root.join(format!("servers/{name}/load.wsp"));
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        whisper::create(
            &path,
            &[Retention {
                seconds_per_point: 60,
                points: 1440,
            }],
            &CreateOptions::default(),
        )
        .unwrap();
        let points: Vec<(i64, f64)> = (0..300)
            .map(|i| (NOW - i * 60, scale * (10.0 + (i as f64 / 7.0).sin() * 5.0)))
            .collect();
        WhisperFile::open_rw(&path)
            .unwrap()
            .update_many(&points, NOW)
            .unwrap();
    }
}

fn decode(bytes: &[u8]) -> (u32, u32, Vec<[u8; 3]>) {
    let decoder = png::Decoder::new(std::io::Cursor::new(bytes));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).unwrap();
    assert_eq!(info.color_type, png::ColorType::Rgb);
    let pixels = buf[..info.buffer_size()]
        .chunks(3)
        .map(|p| [p[0], p[1], p[2]])
        .collect();
    (info.width, info.height, pixels)
}

#[test]
fn png_and_svg_graphs() {
    let dir = temp_dir();
    let data = dir.path().join("data");
    tree(&data.join("whisper"));
    let node = Node::serve(BIN.as_ref(), &data, &[]);
    let base = format!("/render?target=servers.*.load&from=-4h&now={NOW}");

    // The default format is PNG, at the requested size, in the given colours.
    let (status, headers, body) = node.http_raw(
        "GET",
        &format!("{base}&width=400&height=300&colorList=red,blue&title=Load"),
        None,
        &[],
    );
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert!(headers.contains(&("content-type".into(), "image/png".into())));
    let (w, h, pixels) = decode(&body);
    assert_eq!((w, h), (400, 300));
    let count = |c: [u8; 3]| pixels.iter().filter(|p| **p == c).count();
    assert!(count([200, 0, 50]) > 50, "red series drawn");
    assert!(count([100, 100, 255]) > 50, "blue series drawn");
    let background = count([255, 255, 255]);
    assert!(
        background < pixels.len() * 95 / 100,
        "the plot is not blank"
    );

    // bgcolor and a hex colour.
    let (_, _, body) = node.http_raw(
        "GET",
        &format!("{base}&format=png&bgcolor=black&colorList=00ff00,ff00ff&width=200&height=150"),
        None,
        &[],
    );
    let (_, _, pixels) = decode(&body);
    let count = |c: [u8; 3]| pixels.iter().filter(|p| **p == c).count();
    assert!(count([0, 0, 0]) > pixels.len() / 3, "black background");
    assert!(count([0, 255, 0]) > 20 && count([255, 0, 255]) > 20);

    // SVG: legend text unless hidden, axis bounds from yMin/yMax.
    let (status, svg) = node.http_request(&format!("{base}&format=svg&yMin=0&yMax=1000"));
    assert_eq!(status, 200);
    assert!(svg.starts_with("<svg"), "{}", &svg[..100.min(svg.len())]);
    assert!(svg.contains("servers.web1.load") && svg.contains("servers.web2.load"));
    assert!(
        svg.contains(">1 K<") || svg.contains("1 K"),
        "a 1,000 tick for yMax=1000"
    );
    let (_, svg) = node.http_request(&format!("{base}&format=svg&hideLegend=true"));
    assert!(!svg.contains("servers.web1.load"), "legend hidden");

    // Staircase lines differ from slopes; connected ones draw (the fixture
    // has no gaps for them to bridge).
    let image = |q: &str| {
        node.http_raw(
            "GET",
            &format!("{base}&width=300&height=200&{q}"),
            None,
            &[],
        )
        .2
    };
    let slope = image("lineMode=slope");
    let stairs = image("lineMode=staircase");
    assert_eq!(decode(&stairs).0, 300);
    assert!(stairs != slope, "lineMode=staircase draws differently");
    assert_eq!(decode(&image("lineMode=connected")).0, 300);

    // Bad graph parameters are 400s naming them.
    for (query, name) in [
        ("width=abc", "width"),
        ("height=0", "height"),
        ("bgcolor=notacolour", "bgcolor"),
        ("areaMode=sideways", "areaMode"),
        ("hideLegend=maybe", "hideLegend"),
        ("yMin=low", "yMin"),
        ("lineMode=zigzag", "lineMode"),
    ] {
        let (status, body) = node.http_request(&format!("{base}&{query}"));
        assert_eq!(status, 400, "{query}: {body}");
        assert!(body.contains(name), "{query}: {body}");
    }
    node.stop(Duration::from_secs(20));
}

//! `/render` images, decoded: PNG size, a drawn plot, each series' colour,
//! legend text (SVG), axis bounds, and 400s for bad graph parameters.

use std::time::Duration;

use graunt_harness::node::Node;
use graunt_harness::temp_dir;
use graunt_storage::whisper::{self, CreateOptions, Retention, WhisperFile};

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
    let node = Node::start(&data, &[]);
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
        svg_texts(&svg).contains(&"1000.0".to_string()),
        "a 1000.0 tick for yMax=1000 (a 200 step keeps it unprefixed, as graphite)"
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
        ("logBase=1", "logBase"),
        ("yStep=0", "yStep"),
        ("yUnitSystem=roman", "yUnitSystem"),
        ("areaAlpha=2", "areaAlpha"),
        ("graphType=bar", "graphType"),
        ("graphType=pie&pieMode=median", "pieMode"),
        ("yMin=5&yMax=1", "yMin"),
        ("fontBold=very", "fontBold"),
    ] {
        let (status, body) = node.http_request(&format!("{base}&{query}"));
        assert_eq!(status, 400, "{query}: {body}");
        assert!(body.contains(name), "{query}: {body}");
    }
    node.stop(Duration::from_secs(20));
}

/// The y-axis labels of an SVG graph: the texts that parse as numbers
/// (with a unit prefix).
fn svg_texts(svg: &str) -> Vec<String> {
    svg.split("<text")
        .skip(1)
        .filter_map(|t| {
            let body = t.split_once('>')?.1;
            Some(body.split_once("</text>")?.0.trim().to_string())
        })
        .collect()
}

#[test]
fn axes_areas_and_pies_follow_graphite_parameters() {
    let dir = temp_dir();
    let data = dir.path().join("data");
    tree(&data.join("whisper"));
    let node = Node::start(&data, &[]);
    let base = format!("/render?target=servers.*.load&from=-4h&now={NOW}");
    let svg = |q: &str| {
        let (status, body) = node.http_request(&format!("{base}&format=svg&{q}"));
        assert_eq!(status, 200, "{q}: {body}");
        svg_texts(&body)
    };

    // graphite's steps and labels: data 5..45 gives 0, 10.0, ... 50.0 (Python
    // prints the floats); yStep overrides.
    let t = svg("");
    for label in ["0", "10.0", "20.0", "30.0", "40.0", "50.0"] {
        assert!(t.contains(&label.to_string()), "{label} in {t:?}");
    }
    let t = svg("yStep=25&yMin=0&yMax=50");
    assert!(
        t.contains(&"25.0".to_string()) && !t.contains(&"10.0".to_string()),
        "{t:?}"
    );
    // Units: scaled data shows SI and binary prefixes.
    let scaled =
        format!("/render?target=scale(servers.web2.load,1000000)&from=-4h&now={NOW}&format=svg");
    let si = svg_texts(&node.http_request(&scaled).1);
    assert!(si.iter().any(|l| l.ends_with(" M")), "{si:?}");
    let bin = svg_texts(&node.http_request(&format!("{scaled}&yUnitSystem=binary")).1);
    assert!(bin.iter().any(|l| l.ends_with(" Mi")), "{bin:?}");
    let none = svg_texts(&node.http_request(&format!("{scaled}&yUnitSystem=none")).1);
    assert!(none.iter().any(|l| l == "40000000.0"), "{none:?}");
    // logBase: powers of the base.
    let t = svg("logBase=10");
    assert!(
        t.contains(&"1.0".to_string()) && t.contains(&"100.0".to_string()),
        "{t:?}"
    );
    // xFormat and the x labels' timezone.
    let t = svg("xFormat=%25H%25M&tz=UTC");
    assert!(
        t.iter().any(|l| l == "2000"),
        "an hour label at 20:00 UTC: {t:?}"
    );
    // Titles and a right axis for secondYAxis series.
    let (_, body) = node.http_request(&format!(
        "/render?target=servers.web1.load&target=secondYAxis(scale(servers.web2.load,1000))\
         &from=-4h&now={NOW}&format=svg&vtitle=left%20side&vtitleRight=right%20side"
    ));
    let t = svg_texts(&body);
    assert!(t.contains(&"left side".to_string()) && t.contains(&"right side".to_string()));
    assert!(
        t.iter().any(|l| l.ends_with(" k")),
        "right axis in thousands: {t:?}"
    );
    assert!(t.contains(&"16.0".to_string()), "left axis in units: {t:?}");
    // uniqueLegend: one entry per name.
    let (_, body) = node.http_request(&format!(
        "/render?target=servers.web1.load&target=servers.web1.load&from=-4h&now={NOW}\
         &format=svg&uniqueLegend=true"
    ));
    assert_eq!(
        svg_texts(&body)
            .iter()
            .filter(|l| *l == "servers.web1.load")
            .count(),
        1
    );
    // hideYAxis keeps the x labels; hideAxes drops all.
    let with = svg("").len();
    let without_y = svg("hideYAxis=true").len();
    assert!(without_y < with && without_y > 2, "{with} {without_y}");

    // Areas: stacked fills reach the sum; alpha blends with the background.
    let png = |q: &str| {
        decode(
            &node
                .http_raw(
                    "GET",
                    &format!("{base}&width=300&height=200&colorList=ff0000,0000ff&{q}"),
                    None,
                    &[],
                )
                .2,
        )
    };
    let (_, _, lines) = png("");
    let (_, _, stacked) = png("areaMode=stacked");
    let count = |p: &[[u8; 3]], c: [u8; 3]| p.iter().filter(|x| **x == c).count();
    let (filled, drawn) = (count(&stacked, [0, 0, 255]), count(&lines, [0, 0, 255]));
    assert!(
        filled > 5 * drawn.max(1),
        "filled: {filled} vs {drawn} line pixels"
    );
    assert!(
        count(&stacked, [255, 0, 0]) > 1000,
        "first series filled too"
    );
    let (_, _, faint) = decode(
        &node
            .http_raw(
                "GET",
                &format!(
                    "/render?target=servers.web1.load&from=-4h&now={NOW}&width=300&height=200\
                     &colorList=ff0000&areaMode=all&areaAlpha=0.5"
                ),
                None,
                &[],
            )
            .2,
    );
    assert!(
        count(&faint, [255, 127, 127]) + count(&faint, [255, 128, 128]) > 100,
        "alpha 0.5 over white"
    );
    // fontBold changes the glyphs; dashed lines leave gaps.
    assert_ne!(png("title=T&fontBold=true").2, png("title=T").2);
    let strokes = |target: &str| {
        let (_, body) = node.http_request(&format!(
            "/render?target={target}&from=-4h&now={NOW}&format=svg&colorList=ff0000"
        ));
        body.matches("stroke=\"#FF0000\"").count()
    };
    let (dashed, solid) = (
        strokes("dashed(servers.web1.load)"),
        strokes("servers.web1.load"),
    );
    assert!(dashed > 10 * solid, "dashes: {dashed} strokes vs {solid}");

    // Pie: a slice per series in its colour, shares labelled as graphite does.
    let (status, body) =
        node.http_request(&format!("{base}&format=svg&graphType=pie&pieMode=maximum"));
    assert_eq!(status, 200);
    let shares: Vec<String> = svg_texts(&body)
        .into_iter()
        .filter(|l| l.starts_with('%'))
        .collect();
    assert_eq!(shares, ["%25.00", "%75.00"], "web2 is 3x web1");
    let (_, _, pie) = png("graphType=pie");
    assert!(count(&pie, [255, 0, 0]) > 3000 && count(&pie, [0, 0, 255]) > 3000);

    // With GRAUNT_SCREENSHOTS=<dir>, the README's sample graphs.
    if let Some(out) = std::env::var_os("GRAUNT_SCREENSHOTS") {
        for (file, query) in [
            (
                "graph-lines.png",
                "&title=Load&vtitle=load&width=600&height=300",
            ),
            (
                "graph-stacked.png",
                "&title=Stacked&areaMode=stacked&width=600&height=300",
            ),
            (
                "graph-pie.png",
                "&title=Share&graphType=pie&width=400&height=300",
            ),
        ] {
            let (_, _, body) = node.http_raw("GET", &format!("{base}{query}"), None, &[]);
            std::fs::write(std::path::Path::new(&out).join(file), body).unwrap();
        }
    }
    node.stop(Duration::from_secs(20));
}

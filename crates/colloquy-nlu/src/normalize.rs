use unicode_normalization::UnicodeNormalization;

/// Canonical form of a user message that everything downstream sees (and
/// that entity offsets refer to): NFKC, so full-width `３９` and `ＡＢＣ`
/// become ASCII; lowercase; traditional Chinese characters the bots' words
/// use turned simplified (`碼` → `码`), one character for one so offsets
/// still count the user's characters; control and zero-width characters
/// dropped; any run of whitespace (tabs, newlines, U+3000) collapsed into
/// one space and trimmed at both ends.
pub fn normalize(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    // Starting "inside" a space trims leading whitespace for free.
    let mut pending_space = false;
    for c in text.nfkc().flat_map(char::to_lowercase).map(simplified) {
        if c.is_whitespace() {
            pending_space = !out.is_empty();
        } else if !c.is_control() && !is_invisible(c) {
            if pending_space {
                out.push(' ');
                pending_space = false;
            }
            out.push(c);
        }
    }
    out
}

/// Traditional → simplified, sorted by the traditional character. Users in
/// Hong Kong and Taiwan (or with a traditional input method) write `星雲跑鞋
/// 有三十八碼嗎`; bots are written in simplified characters, and their
/// examples, lookups and regexes should match either. A full conversion
/// table (thousands of characters, many one-to-many) would be a large
/// dependency for little gain: this covers the characters of shopping,
/// ordering and customer-service talk. No target is itself a key, so
/// normalising twice changes nothing.
const TRADITIONAL: &[(char, char)] = &[
    ('並', '并'),
    ('來', '来'),
    ('個', '个'),
    ('們', '们'),
    ('傳', '传'),
    ('價', '价'),
    ('億', '亿'),
    ('優', '优'),
    ('兒', '儿'),
    ('內', '内'),
    ('兩', '两'),
    ('別', '别'),
    ('則', '则'),
    ('動', '动'),
    ('務', '务'),
    ('參', '参'),
    ('員', '员'),
    ('問', '问'),
    ('喬', '乔'),
    ('單', '单'),
    ('嗎', '吗'),
    ('囉', '啰'),
    ('圍', '围'),
    ('塊', '块'),
    ('寫', '写'),
    ('寬', '宽'),
    ('寶', '宝'),
    ('專', '专'),
    ('尋', '寻'),
    ('對', '对'),
    ('嶽', '岳'),
    ('師', '师'),
    ('幣', '币'),
    ('幫', '帮'),
    ('幾', '几'),
    ('庫', '库'),
    ('張', '张'),
    ('後', '后'),
    ('從', '从'),
    ('愛', '爱'),
    ('態', '态'),
    ('應', '应'),
    ('戶', '户'),
    ('換', '换'),
    ('擇', '择'),
    ('數', '数'),
    ('於', '于'),
    ('時', '时'),
    ('會', '会'),
    ('東', '东'),
    ('條', '条'),
    ('業', '业'),
    ('標', '标'),
    ('樣', '样'),
    ('機', '机'),
    ('歡', '欢'),
    ('歲', '岁'),
    ('氣', '气'),
    ('沒', '没'),
    ('涼', '凉'),
    ('減', '减'),
    ('準', '准'),
    ('為', '为'),
    ('熱', '热'),
    ('營', '营'),
    ('狀', '状'),
    ('獎', '奖'),
    ('現', '现'),
    ('當', '当'),
    ('發', '发'),
    ('碼', '码'),
    ('種', '种'),
    ('穩', '稳'),
    ('簽', '签'),
    ('紅', '红'),
    ('級', '级'),
    ('結', '结'),
    ('給', '给'),
    ('經', '经'),
    ('綠', '绿'),
    ('網', '网'),
    ('緊', '紧'),
    ('線', '线'),
    ('聯', '联'),
    ('聲', '声'),
    ('聽', '听'),
    ('腳', '脚'),
    ('與', '与'),
    ('舊', '旧'),
    ('萬', '万'),
    ('藍', '蓝'),
    ('處', '处'),
    ('號', '号'),
    ('裏', '里'),
    ('裡', '里'),
    ('見', '见'),
    ('親', '亲'),
    ('訂', '订'),
    ('計', '计'),
    ('訴', '诉'),
    ('詢', '询'),
    ('試', '试'),
    ('話', '话'),
    ('該', '该'),
    ('誤', '误'),
    ('說', '说'),
    ('誰', '谁'),
    ('請', '请'),
    ('謝', '谢'),
    ('讀', '读'),
    ('讓', '让'),
    ('貝', '贝'),
    ('貨', '货'),
    ('貳', '贰'),
    ('買', '买'),
    ('費', '费'),
    ('賣', '卖'),
    ('質', '质'),
    ('購', '购'),
    ('車', '车'),
    ('輕', '轻'),
    ('輪', '轮'),
    ('轉', '转'),
    ('這', '这'),
    ('週', '周'),
    ('運', '运'),
    ('過', '过'),
    ('達', '达'),
    ('遞', '递'),
    ('適', '适'),
    ('選', '选'),
    ('還', '还'),
    ('郵', '邮'),
    ('錢', '钱'),
    ('錯', '错'),
    ('鎖', '锁'),
    ('鐘', '钟'),
    ('長', '长'),
    ('門', '门'),
    ('開', '开'),
    ('閑', '闲'),
    ('閒', '闲'),
    ('間', '间'),
    ('關', '关'),
    ('陸', '陆'),
    ('雖', '虽'),
    ('雙', '双'),
    ('雜', '杂'),
    ('雲', '云'),
    ('電', '电'),
    ('預', '预'),
    ('頭', '头'),
    ('題', '题'),
    ('顏', '颜'),
    ('風', '风'),
    ('體', '体'),
    ('鬆', '松'),
    ('麵', '面'),
    ('麼', '么'),
    ('麽', '么'),
    ('點', '点'),
];

fn simplified(c: char) -> char {
    // Every key is a CJK ideograph: skip the search for everything else.
    if c < '\u{4e00}' {
        return c;
    }
    TRADITIONAL
        .binary_search_by_key(&c, |&(t, _)| t)
        .map_or(c, |i| TRADITIONAL[i].1)
}

/// Format characters that users paste in from other apps; they are not
/// `is_control` but would split words and shift offsets.
fn is_invisible(c: char) -> bool {
    matches!(
        c,
        '\u{200b}'..='\u{200f}' | '\u{2060}' | '\u{feff}' | '\u{00ad}'
    )
}

#[cfg(test)]
mod tests {
    use super::normalize;

    #[test]
    fn folds_width_case_and_space() {
        assert_eq!(normalize("  Hello\t\nWORLD  "), "hello world");
        assert_eq!(normalize("３９码"), "39码");
        assert_eq!(normalize("ＡＢＣ　ｄｅｆ"), "abc def");
        assert_eq!(normalize("我要\u{200b}买\u{7}鞋"), "我要买鞋");
        assert_eq!(normalize("ＮＩＫＥ，好"), "nike,好");
        assert_eq!(normalize(""), "");
        assert_eq!(normalize(" \u{3000} "), "");
    }

    #[test]
    fn traditional_characters_become_simplified() {
        assert_eq!(normalize("星雲跑鞋有三十八碼嗎"), "星云跑鞋有三十八码吗");
        assert_eq!(normalize("兩雙疾風板鞋"), "两双疾风板鞋");
        assert_eq!(normalize("請問我的訂單到哪裡了"), "请问我的订单到哪里了");
        // Simplified text and characters both scripts share are untouched.
        assert_eq!(normalize("星云跑鞋有39码吗"), "星云跑鞋有39码吗");
    }

    #[test]
    fn the_table_is_sorted_and_maps_once() {
        use super::TRADITIONAL;
        assert!(TRADITIONAL.windows(2).all(|w| w[0].0 < w[1].0));
        for &(t, s) in TRADITIONAL {
            assert_ne!(t, s);
            assert!(t >= '\u{4e00}', "{t}");
            assert!(
                TRADITIONAL.binary_search_by_key(&s, |&(t, _)| t).is_err(),
                "{s} is a key"
            );
        }
    }

    proptest::proptest! {
        #[test]
        fn idempotent(text in "[a-zA-Z0-9 \t\n,.!?ÄÖÜäöüİﬁ①ＡＢｃ１２３　，。三十九码碼雙兩號\u{200b}\u{7}]{0,30}") {
            let once = normalize(&text);
            proptest::prop_assert_eq!(normalize(&once), once.clone());
            proptest::prop_assert!(!once.starts_with(' ') && !once.ends_with(' ') && !once.contains("  "));
        }
    }
}
